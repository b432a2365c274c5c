"""The retraining loop's decisions, one table per step: the trigger, the gate, the live
analysis, and advance() walking Idle -> Training -> Canary -> Promoted / Rejected / RolledBack;
and the cron schedules the trigger reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tauon_operator import cron, retraining
from tauon_operator.api.retraining import (
    Measurement,
    Retraining,
    RetrainingPhase,
    RetrainingStatus,
)
from tauon_operator.retraining import Observed, advance

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CHAMPION = "a" * 64
CHALLENGER = "b" * 64


def policy(**trigger) -> Retraining:
    return Retraining.model_validate(
        {
            "trigger": trigger or {"minFeedback": 100},
            "analysis": {"minRequests": 500, "minDurationSeconds": 30, "trafficPercent": 20},
        }
    )


def stats(correct: int, incorrect: int, by_model: dict | None = None) -> dict:
    return {
        "total": correct + incorrect,
        "correct": correct,
        "incorrect": incorrect,
        "byModelDigest": by_model
        or {CHAMPION[:12]: {"correct": correct, "incorrect": incorrect}},
    }


def observed(**kw) -> Observed:
    base = {
        "name": "digits",
        "now": T0,
        "created": T0 - timedelta(hours=1),
        "spec_model": "fp",
        "champion_digest": CHAMPION,
        "champion_test_accuracy": 0.85,
    }
    return Observed(**(base | kw))


def job(phase: str, accuracy: float | None = None, reason: str = "") -> dict:
    st: dict = {"phase": phase}
    if accuracy is not None:
        st["model"] = {
            "sha256": CHALLENGER,
            "location": f"s3://tauon/models/digits/{CHALLENGER}/",
            "metrics": {"accuracy": accuracy},
            "datasetDigest": "c" * 64,
        }
    if reason:
        st["conditions"] = [{"type": "Failed", "status": "True", "reason": reason,
                             "message": "accuracy 0.41 is below evaluation.minimum 0.8"}]  # fmt: skip
    return {"metadata": {"name": "digits-retrain-1"}, "status": st}


# --- cron ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "since", "expected"),
    [
        ("*/15 * * * *", "2026-12-07T12:01", "2026-12-07T12:15"),
        ("0 3 * * 0", "2026-12-07T12:00", "2026-12-13T03:00"),  # the next Sunday
        ("@daily", "2026-12-07T00:00", "2026-12-08T00:00"),
        ("30 9 1,15 * *", "2026-12-02T00:00", "2026-12-15T09:30"),
        ("0 0 1 * 1", "2026-12-02T00:00", "2026-12-07T00:00"),  # dom OR dow, both restricted
        ("0 12 * * 7", "2026-12-07T12:00", "2026-12-13T12:00"),  # 7 is Sunday
        ("0 0 30 2 *", "2026-12-07T00:00", None),  # February 30th: never
    ],
)
def test_cron_next_after(expr, since, expected):
    at = cron.Schedule.parse(expr).next_after(datetime.fromisoformat(since).replace(tzinfo=UTC))
    assert (at.strftime("%Y-%m-%dT%H:%M") if at else None) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "five fields"),
        ("60 * * * *", "minute: '60' is outside 0-59"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("*/0 * * * *", "step"),
        ("a * * * *", "not a number"),
    ],
)
def test_cron_errors_name_the_field(expr, message):
    with pytest.raises(ValueError, match=message):
        cron.Schedule.parse(expr)


def test_a_bad_schedule_is_refused_in_the_spec():
    with pytest.raises(ValidationError, match="hour"):
        policy(schedule="0 25 * * *")
    with pytest.raises(ValidationError, match="at least one of"):
        Retraining.model_validate({"trigger": {}})


# --- the trigger ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "state", "seen", "fires"),
    [
        ({"minFeedback": 100}, {}, stats(60, 39), None),
        ({"minFeedback": 100}, {}, stats(60, 40), "100 labelled feedback records"),
        # counted since the last round started
        ({"minFeedback": 100}, {"labelledAtRound": 50, "round": 1}, stats(90, 40), None),
        ({"minFeedback": 100}, {"labelledAtRound": 50, "round": 1}, stats(100, 50), "100"),
        # live accuracy: judged only over enough records
        ({"liveAccuracyBelow": 0.9, "liveAccuracySamples": 50}, {}, stats(30, 10), None),
        ({"liveAccuracyBelow": 0.9, "liveAccuracySamples": 50}, {}, stats(40, 10), "0.800"),
        ({"liveAccuracyBelow": 0.7, "liveAccuracySamples": 50}, {}, stats(40, 10), None),
        # a schedule fires when it passed and there is something new to learn
        ({"schedule": "*/30 * * * *"}, {}, stats(1, 0), "schedule"),
        ({"schedule": "*/30 * * * *"}, {}, stats(0, 0), None),
        ({"schedule": "0 0 1 1 *"}, {}, stats(5, 0), None),
    ],
)
def test_trigger(trigger, state, seen, fires):
    why = retraining.trigger_fired(
        policy(**trigger),
        RetrainingStatus.model_validate(state),
        seen,
        CHAMPION,
        T0 - timedelta(hours=1),
        T0,
    )
    assert (why is None) if fires is None else (fires in (why or "")), why


def test_no_stats_no_champion_no_round():
    p = policy(minFeedback=1)
    assert retraining.trigger_fired(p, RetrainingStatus(), None, CHAMPION, T0, T0) is None
    assert retraining.trigger_fired(p, RetrainingStatus(), stats(5, 5), None, T0, T0) is None


# --- the gate and the analysis -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "champion", "challenger", "passes"),
    [
        (0.0, 0.85, 0.97, True),
        (0.0, 0.85, 0.85, True),
        (0.0, 0.85, 0.84, False),
        (0.02, 0.85, 0.84, True),
        (0.0, None, 0.5, True),  # a pinned champion: its own evaluation.minimum gates it
        (0.0, 0.85, None, False),
    ],
)
def test_gate(drop, champion, challenger, passes):
    p = Retraining.model_validate({"trigger": {"minFeedback": 1}, "gate": {"maxAccuracyDrop": drop}})
    assert (retraining.gate(p, champion, challenger) is None) == passes


GOOD = {"requests": 600, "seconds": 60, "canary_error_percent": 0.0, "stable_error_percent": 0.0,
        "canary_p99_seconds": 0.010, "stable_p99_seconds": 0.008}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "verdict"),
    [
        ({}, None),
        ({"canary_error_percent": 2.5, "stable_error_percent": 1.0}, "ErrorRate"),
        ({"canary_error_percent": 1.5, "stable_error_percent": 1.0}, None),
        ({"canary_p99_seconds": 0.020}, "Latency"),
        ({"canary_accuracy": 0.80, "canary_feedback": 40, "stable_accuracy": 0.90,
          "stable_feedback": 40}, "LiveAccuracy"),  # fmt: skip
        ({"canary_accuracy": 0.80, "canary_feedback": 10, "stable_accuracy": 0.90,
          "stable_feedback": 40}, None),  # fmt: skip  # too little feedback to judge
        ({"canary_accuracy": 0.87, "canary_feedback": 40, "stable_accuracy": 0.90,
          "stable_feedback": 40}, None),  # fmt: skip  # within maxAccuracyDrop 0.05
    ],
)
def test_judge(changes, verdict):
    got = retraining.judge(policy(), Measurement(**(GOOD | changes)))
    assert (got[0] if got else None) == verdict


def test_p99_interpolates_like_histogram_quantile():
    buckets = {0.005: 0.0, 0.01: 50.0, 0.025: 100.0, float("inf"): 100.0}
    assert retraining.p99(buckets) == pytest.approx(0.01 + 0.015 * (99 - 50) / 50)
    assert retraining.p99({0.01: 0.0, float("inf"): 10.0}) == 0.01  # all in +Inf
    assert retraining.p99({}) is None


def test_measurement_counts_what_came_after_the_baseline():
    canary = {"requests": 130.0, "errors": 1.0, "fallback": 0.0, "latency": {}}
    stable = {"requests": 900.0, "errors": 0.0, "fallback": 2.0, "latency": {}}
    base = retraining.counters(
        {"requests": 30.0, "errors": 0.0, "fallback": 0.0},
        {"requests": 500.0, "errors": 0.0, "fallback": 2.0},
    ) | {"stableCorrect": 10, "stableIncorrect": 5}
    m = retraining.measurement(canary, stable, base, T0, T0 + timedelta(seconds=42),
                               (18, 2), (40, 10))  # fmt: skip
    assert (m.requests, m.seconds, m.canary_percent) == (500, 42, 20.0)
    # the two forwards that fell back before the baseline are not counted; they were served
    # (and counted) by the stable servers, so they are not the stable's own requests either
    assert m.canary_error_percent == 1.0  # 1 of 100
    assert (m.canary_accuracy, m.canary_feedback) == (0.9, 20)
    assert (m.stable_accuracy, m.stable_feedback) == (round(30 / 35, 4), 35)
    # a restarted server's counters start again below the baseline: counted from zero
    restarted = retraining.measurement({**canary, "requests": 20.0}, stable, base, T0, T0,
                                       None, None)  # fmt: skip
    assert restarted.requests == 20 + 400


# --- the loop ------------------------------------------------------------------------------------


def test_a_round_walks_from_trigger_to_promotion():
    p = policy(minFeedback=100)
    first = advance(p, RetrainingStatus(), observed(stats=stats(10, 5)))
    assert first.status.phase == RetrainingPhase.IDLE and not first.start_round
    assert first.status.labelled_at_round == 15  # what was there before counts as old

    step = advance(p, first.status, observed(stats=stats(80, 35)))
    assert step.start_round and step.status.phase == RetrainingPhase.TRAINING
    assert step.status.round == 1
    assert step.status.challenger.training_job == "digits-retrain-1"
    assert step.events[0][1] == "RetrainingStarted"

    waiting = advance(p, step.status, observed(stats=stats(80, 35), job=job("Running")))
    assert waiting.status == step.status and not waiting.events

    gated = advance(p, step.status, observed(stats=stats(80, 35), job=job("Succeeded", 0.97)))
    assert gated.status.phase == RetrainingPhase.CANARY
    assert gated.status.challenger.digest == CHALLENGER
    assert gated.events[0][1] == "CanaryStarted"

    metrics = {"requests": 0.0, "errors": 0.0, "fallback": 0.0, "latency": {}}
    not_yet = advance(p, gated.status, observed(rolled_out=False, canary_metrics=metrics,
                                                stable_metrics=metrics))  # fmt: skip
    assert not_yet.status.challenger.canary_since is None
    begun = advance(p, gated.status, observed(rolled_out=True, canary_metrics=metrics,
                                              stable_metrics=metrics, stats=stats(80, 35)))  # fmt: skip
    assert begun.status.challenger.canary_since == T0
    # the first seconds after the rollout (endpoints reaching the stable servers) do not count
    busy = {**metrics, "requests": 40.0, "fallback": 3.0}
    settling = advance(p, begun.status, observed(now=T0 + timedelta(seconds=5), canary_metrics=busy,
                                                 stable_metrics=busy))  # fmt: skip
    assert settling.status.challenger.canary_since == T0
    assert settling.status.challenger.baseline["stableFallback"] == 3.0
    assert settling.status.analysis is None

    later = T0 + timedelta(seconds=40)
    few = {**metrics, "requests": 50.0}
    short = advance(p, begun.status, observed(now=later, canary_metrics=few, stable_metrics=few))
    assert short.status.phase == RetrainingPhase.CANARY
    assert short.status.analysis.requests == 100
    assert short.status.analysis.seconds == 30  # from the end of the settling

    canary = {**metrics, "requests": 110.0}
    stable = {**metrics, "requests": 440.0}
    done = advance(p, short.status, observed(now=later, canary_metrics=canary,
                                             stable_metrics=stable, job=job("Succeeded", 0.97)))  # fmt: skip
    assert done.status.phase == RetrainingPhase.IDLE
    assert done.status.champion.digest == CHALLENGER
    assert done.status.champion.test_accuracy == 0.97
    assert done.status.champion.over == "fp"
    assert done.status.decisions[-1].decision == "Promoted"
    assert "550 requests" in done.status.decisions[-1].message
    assert done.events[0][1] == "Promoted"


@pytest.mark.parametrize(
    ("seen", "reason"),
    [
        ({"job": job("Failed", reason="BelowEvaluationGate")}, "TrainingFailed"),
        ({"dataset": {"status": {"phase": "Failed", "conditions": [
            {"type": "Ready", "reason": "StoreRequired", "message": "no store"}]}}},
         "DatasetFailed"),  # fmt: skip
        ({"job": job("Succeeded", 0.80)}, "GateFailed"),
    ],
)
def test_a_challenger_that_fails_is_rejected_and_the_champion_stays(seen, reason):
    state = RetrainingStatus.model_validate(
        {"phase": "Training", "round": 1, "challenger": {"trainingJob": "digits-retrain-1",
                                                         "dataset": "digits-retrain-1"}}  # fmt: skip
    )
    step = advance(policy(), state, observed(**seen))
    assert step.status.phase == RetrainingPhase.IDLE and step.status.champion is None
    assert step.status.decisions[-1].reason == reason
    assert step.events[0][0] == "Warning"
    if reason == "GateFailed":
        assert step.rejected[0] == CHALLENGER
        assert "0.8000 is below the champion's 0.8500" in step.status.decisions[-1].message


def test_a_canary_worse_live_is_rolled_back():
    state = RetrainingStatus.model_validate({
        "phase": "Canary", "round": 2,
        "challenger": {"trainingJob": "digits-retrain-2", "dataset": "digits-retrain-2",
                       "digest": CHALLENGER, "location": "s3://tauon/m/", "testAccuracy": 0.9,
                       "canarySince": T0.isoformat(), "baseline": {}},
    })  # fmt: skip
    bad = {"requests": 100.0, "errors": 30.0, "fallback": 0.0, "latency": {}}
    fine = {"requests": 500.0, "errors": 0.0, "fallback": 0.0, "latency": {}}
    step = advance(policy(), state, observed(now=T0 + timedelta(minutes=2), canary_metrics=bad,
                                             stable_metrics=fine))  # fmt: skip
    assert step.status.phase == RetrainingPhase.IDLE
    assert step.status.decisions[-1].decision == "RolledBack"
    assert step.status.decisions[-1].reason == "ErrorRate"
    assert step.status.decisions[-1].measurement.canary_error_percent == 30.0
    assert step.rejected == (CHALLENGER, step.rejected[1])


def test_a_new_spec_model_ends_the_promotion():
    state = RetrainingStatus.model_validate({
        "phase": "Idle", "round": 1,
        "champion": {"digest": CHALLENGER, "location": "s3://x/y/", "over": "old"},
    })  # fmt: skip
    assert advance(policy(), state, observed()).status.champion is None
    kept = state.model_copy(update={"champion": state.champion.model_copy(update={"over": "fp"})})
    assert advance(policy(), kept, observed()).status.champion is not None


def test_decisions_and_rounds_are_bounded():
    state = RetrainingStatus.model_validate({"round": 7, "champion": {
        "digest": CHALLENGER, "location": "s3://x/", "trainingJob": "digits-retrain-2",
        "over": "fp"}})  # fmt: skip
    existing = [f"digits-retrain-{n}" for n in range(1, 10)] + ["digits-retrain-x", "other"]
    kept = retraining.kept_rounds(state, 3, existing)
    names = {n for _, n in kept}
    assert names == {"digits-retrain-5", "digits-retrain-6", "digits-retrain-7",
                     "digits-retrain-2",  # the champion's
                     "digits-retrain-8", "digits-retrain-9",  # rounds the status does not know
                     "digits-retrain-x", "other"}  # fmt: skip
    long = "m" * 60
    assert retraining.round_number(retraining.round_name(long, 12)) == 12
    assert {k for k, _ in kept} == {"Dataset", "TrainingJob"}


def test_round_children_copy_the_recipe_onto_base_plus_feedback():
    md = {"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "digits", "namespace": "ml", "uid": "u1"}}  # fmt: skip
    recipe = {"spec": {"datasetRef": {"name": "digits-small"}, "model": {"architecture": "cnn"},
                       "evaluation": {"minimum": 0.8}, "suspend": True}}  # fmt: skip
    ds, tj = retraining.round_children(md, recipe, 3)
    assert ds["metadata"]["name"] == tj["metadata"]["name"] == "digits-retrain-3"
    assert ds["spec"]["source"]["feedback"] == {
        "modelDeploymentRef": {"name": "digits"}, "baseDatasetRef": {"name": "digits-small"}}
    assert tj["spec"]["datasetRef"] == {"name": "digits-retrain-3"}
    assert tj["spec"]["evaluation"] == {"minimum": 0.8} and "suspend" not in tj["spec"]
    assert ds["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert ds["metadata"]["labels"]["tauon.dev/modeldeployment"] == "digits"
