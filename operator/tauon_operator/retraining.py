"""The retraining loop of a ModelDeployment, as pure decisions: when a round starts, what it
creates (a Dataset of the base plus the feedback, a challenger TrainingJob from the champion's
recipe), whether the challenger passes the gate, and what its canary's live comparison decides.
The handler observes (the cache, the serving pods) and carries the plan out; nothing here does
I/O, so every decision is a table test (tests/unit/test_retraining.py).

    Idle --trigger--> Training --gate passed--> Canary --analysis--> Idle (Promoted / RolledBack)
                         \\--failed, or gate failed--> Idle (Rejected)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tauon_operator import cron
from tauon_operator.api.retraining import (
    Challenger,
    ChampionRef,
    Decision,
    Measurement,
    Retraining,
    RetrainingPhase,
    RetrainingStatus,
    RoundDecision,
)
from tauon_operator.meta import child_name, object_meta, with_spec_hash

KEEP_DECISIONS = 10
# Seconds after both tracks rolled out that the analysis does not count: the canary's new
# endpoint reaching every stable server (kube-proxy, DNS) takes a moment, and a forward that
# finds no endpoint yet is the rollout's, not the model's.
SETTLE_SECONDS = 10
# What of the recipe TrainingJob's spec a round copies: all of it, but the data (the round's
# own Dataset) and what only makes sense once (a resume from someone else's checkpoint).
NOT_COPIED = ("datasetRef", "resumeFrom", "suspend")


def fingerprint(model_source: dict[str, Any]) -> str:
    """Identifies spec.model: a promotion holds while spec.model is what it was promoted over."""
    return hashlib.sha256(json.dumps(model_source, sort_keys=True).encode()).hexdigest()[:16]


def round_name(md_name: str, n: int) -> str:
    """The round's Dataset and TrainingJob (one of each kind, the same name)."""
    return child_name(md_name, f"retrain-{n}")


def labelled(stats: dict[str, Any] | None) -> int | None:
    if stats is None:
        return None
    return int(stats.get("correct") or 0) + int(stats.get("incorrect") or 0)


def graded(stats: dict[str, Any] | None, digest: str | None) -> tuple[int, int] | None:
    """(correct, incorrect) feedback on one model version; None when unknown."""
    if stats is None or not digest:
        return None
    g = (stats.get("byModelDigest") or {}).get(digest[:12]) or {}
    return int(g.get("correct") or 0), int(g.get("incorrect") or 0)


# --- the trigger ---------------------------------------------------------------------------------


def trigger_fired(
    policy: Retraining,
    state: RetrainingStatus,
    stats: dict[str, Any] | None,
    champion_digest: str | None,
    created: datetime,
    now: datetime,
) -> str | None:
    """What starts a round now (a sentence), or None. Feedback the servers cannot be asked for
    (stats None) starts nothing."""
    count = labelled(stats)
    if count is None or champion_digest is None:
        return None
    new = max(0, count - (state.labelled_at_round or 0))
    t = policy.trigger
    if t.min_feedback is not None and new >= t.min_feedback:
        return (
            f"{new} labelled feedback records since the last round (minFeedback {t.min_feedback})"
        )
    if t.live_accuracy_below is not None:
        right, wrong = graded(stats, champion_digest) or (0, 0)
        n = right + wrong
        if n >= t.live_accuracy_samples and new >= t.live_accuracy_samples:
            accuracy = right / n
            if accuracy < t.live_accuracy_below:
                return (
                    f"the champion's live accuracy {accuracy:.3f} over {n} labelled records is "
                    f"below {t.live_accuracy_below} (liveAccuracyBelow)"
                )
    if t.schedule is not None and new > 0:
        since = state.round_started or created
        if cron.due(t.schedule, since, now):
            return f"the schedule {t.schedule!r} ({new} new labelled feedback records)"
    return None


# --- the round's objects -------------------------------------------------------------------------


def round_children(md: dict[str, Any], recipe: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The round's Dataset (the recipe's Dataset plus this deployment's feedback) and its
    challenger TrainingJob (the recipe's spec, on that Dataset), owned by the ModelDeployment."""
    name = round_name(md["metadata"]["name"], n)
    base = recipe["spec"]["datasetRef"]["name"]
    dataset = {
        "apiVersion": md["apiVersion"],
        "kind": "Dataset",
        "metadata": object_meta(md, name, "retraining"),
        "spec": {
            "source": {
                "feedback": {
                    "modelDeploymentRef": {"name": md["metadata"]["name"]},
                    "baseDatasetRef": {"name": base},
                }
            }
        },
    }
    spec = {k: v for k, v in recipe["spec"].items() if k not in NOT_COPIED}
    spec["datasetRef"] = {"name": name}
    job = {
        "apiVersion": md["apiVersion"],
        "kind": "TrainingJob",
        "metadata": object_meta(md, name, "retraining"),
        "spec": spec,
    }
    return [with_spec_hash(dataset), with_spec_hash(job)]


def round_number(name: str) -> int | None:
    """n of a round's object name (round_name: `<md>-retrain-<n>`, the stem shortened with a
    hash when long), None for any other name."""
    stem, _, tail = name.rpartition("-retrain-")
    return int(tail) if stem and tail.isdigit() else None


def kept_rounds(
    state: RetrainingStatus, history_limit: int, existing: Iterable[str]
) -> frozenset[tuple[str, str]]:
    """Of the round objects that exist, those that stay: the last `history_limit` rounds, the
    champion's, and any round the status does not know of yet (a status lost or restored from
    a backup never costs a round its data)."""
    champion = state.champion.training_job if state.champion else None
    keep = set()
    for name in existing:
        n = round_number(name)
        if n is None or n > state.round - history_limit or name == champion:
            keep.add(name)
    return frozenset((kind, n) for n in keep for kind in ("Dataset", "TrainingJob"))


# --- one step of the loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the handler saw for this step."""

    name: str  # the ModelDeployment's
    now: datetime
    created: datetime
    spec_model: str  # fingerprint(spec.model)
    champion_digest: str | None
    champion_test_accuracy: float | None
    stats: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None  # the round's, from the cache
    job: dict[str, Any] | None = None
    # Phase Canary: whether both tracks are rolled out (the last status said Ready with the
    # challenger on the canary), and each track's summed serving.track_metrics.
    rolled_out: bool = False
    canary_metrics: dict[str, Any] | None = None
    stable_metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class Step:
    status: RetrainingStatus
    start_round: bool = False  # create the round's Dataset and TrainingJob
    events: list[tuple[str, str, str]] = field(default_factory=list)
    rejected: tuple[str, str] | None = None  # (digest, why): a challenger that will not serve


def _failure(obj: dict[str, Any] | None) -> str | None:
    st = (obj or {}).get("status") or {}
    if st.get("phase") != "Failed":
        return None
    cond: dict[str, Any] = next(
        (c for c in st.get("conditions") or [] if c["type"] in ("Failed", "Ready", "Stalled")
         and c.get("message")), {},
    )  # fmt: skip
    return f"{cond.get('reason') or 'Failed'}: {cond.get('message') or 'failed'}"


def _end(
    state: RetrainingStatus,
    decision: Decision,
    reason: str,
    message: str,
    now: datetime,
    measurement: Measurement | None = None,
    champion: ChampionRef | None = None,
    labelled_now: int | None = None,
) -> RetrainingStatus:
    """The round's decision recorded; back to Idle. The trigger counts feedback from here on:
    what came during the round (the canary's, say) does not start the next one at once."""
    digest = state.challenger.digest if state.challenger else None
    entry = RoundDecision(
        round=state.round,
        decision=decision,
        reason=reason,
        message=message,
        time=now,
        digest=digest,
        measurement=measurement,
    )
    return state.model_copy(
        update={
            "phase": RetrainingPhase.IDLE,
            "challenger": None,
            "analysis": None,
            "champion": champion or state.champion,
            "labelled_at_round": state.labelled_at_round if labelled_now is None else labelled_now,
            "decisions": (*state.decisions, entry)[-KEEP_DECISIONS:],
        }
    )


def gate(policy: Retraining, champion: float | None, challenger: float | None) -> str | None:
    """Why the challenger may not serve (None: it may)."""
    if challenger is None:
        return "the challenger's TrainingJob reported no test accuracy"
    if champion is None:
        return None  # a pinned champion with no known test metric: its own minimum gates it
    floor = champion - policy.gate.max_accuracy_drop
    if challenger + 1e-9 < floor:
        return (
            f"test accuracy {challenger:.4f} is below the champion's {champion:.4f}"
            + (f" - {policy.gate.max_accuracy_drop}" if policy.gate.max_accuracy_drop else "")
            + " on the same test split"
        )
    return None


def judge(policy: Retraining, m: Measurement) -> tuple[str, str] | None:
    """(reason, message) the canary is rolled back for; None: it is as good as the stable."""
    a = policy.analysis
    ce, se = m.canary_error_percent or 0.0, m.stable_error_percent or 0.0
    if ce > se + a.max_error_rate_increase:
        return "ErrorRate", (
            f"canary failed {ce:.2f} % of its requests, stable {se:.2f} % "
            f"(at most {a.max_error_rate_increase} points more)"
        )
    cl, sl = m.canary_p99_seconds, m.stable_p99_seconds
    if cl is not None and sl and cl > sl * a.max_latency_ratio:
        return "Latency", (
            f"canary p99 {cl * 1000:.1f} ms is over {a.max_latency_ratio}x the stable's "
            f"{sl * 1000:.1f} ms"
        )
    if (
        m.canary_accuracy is not None
        and m.stable_accuracy is not None
        and (m.canary_feedback or 0) >= a.min_feedback
        and (m.stable_feedback or 0) >= a.min_feedback
        and m.canary_accuracy + 1e-9 < m.stable_accuracy - a.max_accuracy_drop
    ):
        return "LiveAccuracy", (
            f"canary live accuracy {m.canary_accuracy:.3f} ({m.canary_feedback} records) is "
            f"more than {a.max_accuracy_drop} below the stable's {m.stable_accuracy:.3f} "
            f"({m.stable_feedback} records)"
        )
    return None


def summary(m: Measurement) -> str:
    parts = [f"{m.requests} requests over {m.seconds} s, {m.canary_percent} % to the canary"]
    parts.append(
        f"errors {m.canary_error_percent or 0:.2f} % vs {m.stable_error_percent or 0:.2f} %"
    )
    if m.canary_p99_seconds is not None and m.stable_p99_seconds is not None:
        parts.append(
            f"p99 {m.canary_p99_seconds * 1000:.1f} vs {m.stable_p99_seconds * 1000:.1f} ms"
        )

    def live(accuracy: float | None, n: int | None) -> str:
        return f"{accuracy:.3f} ({n})" if accuracy is not None else f"- ({n or 0})"

    parts.append(
        f"live accuracy {live(m.canary_accuracy, m.canary_feedback)} vs "
        f"{live(m.stable_accuracy, m.stable_feedback)}"
    )
    return "; ".join(parts)


def advance(policy: Retraining, state: RetrainingStatus, obs: Observed) -> Step:
    """One step of the loop from what is observed now."""
    if state.champion is not None and state.champion.over != obs.spec_model:
        # spec.model changed since the promotion: the user's choice wins, the loop restarts.
        state = state.model_copy(update={"champion": None})
    phase = state.phase or RetrainingPhase.IDLE
    if phase == RetrainingPhase.IDLE:
        if state.phase is None:
            state = state.model_copy(
                update={"phase": RetrainingPhase.IDLE, "labelled_at_round": labelled(obs.stats)}
            )
        why = trigger_fired(policy, state, obs.stats, obs.champion_digest, obs.created, obs.now)
        if why is None:
            return Step(state)
        n = state.round + 1
        name = round_name(obs.name, n)
        started = state.model_copy(
            update={
                "phase": RetrainingPhase.TRAINING,
                "round": n,
                "round_started": obs.now,
                "labelled_at_round": labelled(obs.stats),
                "trigger": why,
                "challenger": Challenger(training_job=name, dataset=name),
            }
        )
        return Step(
            started,
            start_round=True,
            events=[("Normal", "RetrainingStarted", f"round {n}: {why}")],
        )
    challenger = state.challenger
    assert challenger is not None
    if phase == RetrainingPhase.TRAINING:
        if failed := _failure(obs.dataset):
            msg = f"round {state.round}: Dataset {challenger.dataset}: {failed}"
            return Step(
                _end(
                    state,
                    Decision.REJECTED,
                    "DatasetFailed",
                    msg,
                    obs.now,
                    labelled_now=labelled(obs.stats),
                ),
                events=[("Warning", "RetrainingRejected", msg)],
            )
        if failed := _failure(obs.job):
            msg = f"round {state.round}: TrainingJob {challenger.training_job}: {failed}"
            return Step(
                _end(
                    state,
                    Decision.REJECTED,
                    "TrainingFailed",
                    msg,
                    obs.now,
                    labelled_now=labelled(obs.stats),
                ),
                events=[("Warning", "RetrainingRejected", msg)],
            )
        model = ((obs.job or {}).get("status") or {}).get("model") or {}
        if not model.get("sha256") or not model.get("location"):
            return Step(state)  # still preparing or training
        accuracy = (model.get("metrics") or {}).get("accuracy")
        accuracy = float(accuracy) if isinstance(accuracy, int | float) else None
        found = challenger.model_copy(
            update={
                "digest": model["sha256"],
                "location": model["location"],
                "test_accuracy": accuracy,
            }
        )
        state = state.model_copy(update={"challenger": found})
        if why := gate(policy, obs.champion_test_accuracy, accuracy):
            msg = f"round {state.round}: {why}"
            return Step(
                _end(
                    state,
                    Decision.REJECTED,
                    "GateFailed",
                    msg,
                    obs.now,
                    labelled_now=labelled(obs.stats),
                ),
                events=[("Warning", "RetrainingRejected", msg)],
                rejected=(model["sha256"], f"gate: {why}"),
            )
        found = found.model_copy(update={"canary_since": None, "baseline": None})
        msg = (
            f"round {state.round}: challenger {model['sha256'][:12]} passed the gate (test "
            f"accuracy {accuracy:.4f}"
            + (
                f", champion {obs.champion_test_accuracy:.4f}"
                if obs.champion_test_accuracy is not None
                else ""
            )
            + f"); canary at {policy.analysis.traffic_percent} %"
        )
        return Step(
            state.model_copy(update={"phase": RetrainingPhase.CANARY, "challenger": found}),
            events=[("Normal", "CanaryStarted", msg)],
        )
    # Canary: the analysis starts once both tracks serve; its counters are what came after.
    if obs.canary_metrics is None or obs.stable_metrics is None:
        return Step(state)
    since = challenger.canary_since
    settling = since is not None and (obs.now - since).total_seconds() < SETTLE_SECONDS
    if since is None or challenger.baseline is None or settling:
        if since is None and not obs.rolled_out:
            return Step(state)
        right, wrong = graded(obs.stats, obs.champion_digest) or (0, 0)
        base = counters(obs.canary_metrics, obs.stable_metrics) | {
            "stableCorrect": right,
            "stableIncorrect": wrong,
        }
        analysing = challenger.model_copy(
            update={"canary_since": since or obs.now, "baseline": base}
        )
        return Step(state.model_copy(update={"challenger": analysing}))
    assert since is not None
    m = measurement(
        obs.canary_metrics,
        obs.stable_metrics,
        challenger.baseline,
        since + timedelta(seconds=SETTLE_SECONDS),
        obs.now,
        graded(obs.stats, challenger.digest),
        graded(obs.stats, obs.champion_digest),
    )
    state = state.model_copy(update={"analysis": m})
    a = policy.analysis
    if (m.requests or 0) < a.min_requests or (m.seconds or 0) < a.min_duration_seconds:
        return Step(state)
    assert challenger.digest and challenger.location
    if verdict := judge(policy, m):
        reason, why = verdict
        msg = f"round {state.round}: rolled back {challenger.digest[:12]}: {why}"
        return Step(
            _end(
                state,
                Decision.ROLLED_BACK,
                reason,
                msg,
                obs.now,
                m,
                labelled_now=labelled(obs.stats),
            ),
            events=[("Warning", "RolledBack", msg)],
            rejected=(challenger.digest, f"canary: {why}"),
        )
    champion = ChampionRef(
        digest=challenger.digest,
        location=challenger.location,
        training_job=challenger.training_job,
        dataset_digest=(((obs.job or {}).get("status") or {}).get("model") or {}).get(
            "datasetDigest"
        ),
        test_accuracy=challenger.test_accuracy,
        over=obs.spec_model,
    )
    msg = f"round {state.round}: promoted {challenger.digest[:12]}: {summary(m)}"
    return Step(
        _end(state, Decision.PROMOTED, "Promoted", msg, obs.now, m, champion, labelled(obs.stats)),
        events=[("Normal", "Promoted", msg)],
    )


# --- the canary's numbers ------------------------------------------------------------------------


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram (upper bound -> count), interpolated within
    its bucket as Prometheus' histogram_quantile does."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # in the +Inf bucket: the largest finite bound
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def p99(buckets: dict[float, float]) -> float | None:
    return quantile(buckets, 0.99)


COUNTERS = ("requests", "errors", "fallback")


def counters(canary: dict[str, Any], stable: dict[str, Any]) -> dict[str, float]:
    """The scalar counters of both tracks (a baseline)."""
    return {f"canary{k.title()}": float(canary.get(k, 0.0)) for k in COUNTERS} | {
        f"stable{k.title()}": float(stable.get(k, 0.0)) for k in COUNTERS
    }


def measurement(
    canary: dict[str, Any],
    stable: dict[str, Any],
    baseline: dict[str, float],
    since: datetime,
    now: datetime,
    canary_graded: tuple[int, int] | None,
    stable_graded: tuple[int, int] | None,
) -> Measurement:
    """The comparison since the analysis started, from each track's summed /metrics
    (serving.track_metrics) and the feedback stats: the canary's own requests plus those
    forwarded to it that it did not answer, against what the stable servers answered
    themselves. A counter below its baseline (a server restarted) counts from zero."""
    now_counts = counters(canary, stable)

    def delta(key: str) -> float:
        value, base = now_counts[key], baseline.get(key, 0.0)
        return value - base if value >= base else value

    fallback = delta("stableFallback")
    c_req = delta("canaryRequests") + fallback
    s_req = max(0.0, delta("stableRequests") - fallback)  # fallbacks are served (counted) there
    c_err = (delta("canaryErrors") + fallback) / c_req * 100 if c_req else 0.0
    s_err = delta("stableErrors") / s_req * 100 if s_req else 0.0
    cr, cw = canary_graded or (0, 0)
    sr, sw = stable_graded or (0, 0)
    sr = max(0, sr - int(baseline.get("stableCorrect", 0)))
    sw = max(0, sw - int(baseline.get("stableIncorrect", 0)))
    return Measurement(
        requests=int(c_req + s_req),
        canary_percent=round(100 * c_req / (c_req + s_req), 2) if c_req + s_req else None,
        seconds=max(0, int((now - since).total_seconds())),
        canary_error_percent=round(c_err, 3),
        stable_error_percent=round(s_err, 3),
        canary_p99_seconds=p99(canary.get("latency") or {}),
        stable_p99_seconds=p99(stable.get("latency") or {}),
        canary_accuracy=round(cr / (cr + cw), 4) if cr + cw else None,
        canary_feedback=cr + cw,
        stable_accuracy=round(sr / (sr + sw), 4) if sr + sw else None,
        stable_feedback=sr + sw,
    )
