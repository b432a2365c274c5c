"""TrainingJob status, and the next step, from its Dataset, its worker Job and their pods."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tauon_operator import conditions as c
from tauon_operator import queueing
from tauon_operator.api import ModelArtifact, Progress, TrainingJobStatus
from tauon_operator.api.trainingjob import TrainingJobPhase as Phase
from tauon_operator.api.trainingjob import TrainingJobReason as Reason
from tauon_operator.drift import drifted
from tauon_operator.status import observe
from tauon_runtime.contract.keys import ExitCode

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)
WARNINGS = ("Unschedulable", "ImagePullBackOff")  # what a user must act on; not a passing wait
SPEC_APPLIED = "SpecApplied"


@dataclass(frozen=True)
class Plan:
    """What the reconcile should do: the status to write and the actions to take."""

    status: TrainingJobStatus
    apply_children: bool = False  # the Dataset is ready: the workers may exist
    restart: bool = False  # replace the failed worker Job with the next attempt
    stop: bool = False  # a terminal state that needs the running Job gone (deadline passed)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def attempt(tj: dict[str, Any]) -> int:
    return int((tj.get("status") or {}).get("restarts") or 0)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def deadline_left(tj: dict[str, Any], now: datetime) -> int | None:
    limit = tj["spec"].get("activeDeadlineSeconds")
    started = _time((tj.get("status") or {}).get("startTime"))
    if limit is None:
        return None
    if started is None:
        return int(limit)
    return int(limit - (now - started).total_seconds())


def trainingjob_plan(
    tj: dict[str, Any],
    dataset: dict[str, Any] | None,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: datetime,
    model_location: str,
    workload: dict[str, Any] | None = None,
) -> Plan:
    """`workload`: the Kueue Workload of the Job, when the run is queued and Kueue made one."""
    prev = tj.get("status") or {}
    spec = tj["spec"]
    gen = tj["metadata"].get("generation", 1)
    kept: dict[str, Any] = {
        "start_time": _time(prev.get("startTime")),
        "restarts": prev.get("restarts"),
    }
    job_like = {"succeeded": False, "failed": False}

    def plan(
        phase: Phase, conds: list[c.Cond], extra: dict[str, Any] | None = None, **kw: Any
    ) -> Plan:
        fields = {**kept, **(extra or {})}
        status = TrainingJobStatus(
            observed_generation=gen,
            phase=phase,
            conditions=c.merge(prev.get("conditions"), conds, gen, now),
            **fields,
        )
        return Plan(status=status, **kw)

    if prev.get("phase") in TERMINAL:
        return _finished(tj, prev, gen, now)

    ds_name = (spec.get("datasetRef") or {}).get("name")
    # The Dataset matters until the workers exist: a running attempt has its data mounted and
    # finishes with it even if the Dataset is deleted meanwhile (only a new attempt needs it).
    # Own code without a datasetRef needs none.
    if ds_name and job is None and dataset is None:
        return plan(
            Phase.PENDING,
            c.standard(
                ready=False,
                reason=Reason.DATASET_NOT_FOUND,
                stalled=True,
                message=f"Dataset {ds_name!r} does not exist in this namespace",
                **job_like,
            ),
        )
    ds_phase = ((dataset or {}).get("status") or {}).get("phase")
    if ds_name and job is None and ds_phase == "Failed":
        return plan(
            Phase.PENDING,
            c.standard(
                ready=False,
                reason=Reason.DATASET_FAILED,
                stalled=True,
                message=f"Dataset {ds_name!r} failed to prepare",
                **job_like,
            ),
        )
    if ds_name and job is None and ds_phase != "Ready":
        return plan(
            Phase.PENDING,
            c.standard(
                ready=False,
                reason=Reason.WAITING_FOR_DATASET,
                reconciling=True,
                message=f"waiting for Dataset {ds_name!r} to be Ready",
                **job_like,
            ),
        )

    left = deadline_left(tj, now)
    if left is not None and left <= 0 and observe.job_finished(job) != "Complete":
        msg = f"activeDeadlineSeconds ({spec['activeDeadlineSeconds']}s) passed"
        return plan(
            Phase.FAILED,
            c.standard(
                ready=False,
                reason=Reason.DEADLINE_EXCEEDED,
                stalled=True,
                succeeded=False,
                failed=True,
                message=msg,
            ),
            stop=True,
            events=[("Warning", Reason.DEADLINE_EXCEEDED, "the run passed its deadline")],
        )

    if job is None and spec.get("suspend") and queueing.queue_name(tj):
        return plan(  # a queued run suspended by its user holds no Job (and no quota)
            Phase.SUSPENDED,
            c.standard(
                ready=False,
                reason=Reason.SUSPENDED,
                **job_like,
                message="suspended: out of the queue, checkpoints kept; resuming queues it again",
            ),
            apply_children=True,
        )
    if job is None:
        return plan(
            Phase.PENDING,
            c.standard(
                ready=False,
                reason=Reason.CREATING,
                reconciling=True,
                message="creating the worker pods",
                **job_like,
            ),
            apply_children=True,
        )

    st = job.get("status") or {}
    counts = {
        "active": st.get("active", 0),
        "succeeded": st.get("succeeded", 0),
        "failed": st.get("failed", 0),
    }
    finished = observe.job_finished(job)
    if finished == "Complete":
        return _succeeded(prev, pods, model_location, now, plan, counts)
    if finished == "Failed":
        return _failed(tj, job, pods, counts, plan)

    if spec.get("suspend"):
        return plan(
            Phase.SUSPENDED,
            c.standard(
                ready=False,
                reason=Reason.SUSPENDED,
                **job_like,
                message="suspended: workers stopped, checkpoints kept",
            ),
            counts,
            apply_children=True,
        )
    queued: list[c.Cond] = []  # the Admitted condition of a run in a Kueue queue
    if queueing.queue_name(job):
        adm = queueing.admission(job, workload)
        if not adm.admitted:
            why = Reason.PREEMPTED if adm.state == "Preempted" else Reason.QUEUED
            waiting = c.standard(
                ready=False, reason=why, message=adm.message, reconciling=True, **job_like
            )
            return plan(
                Phase.QUEUED,
                [*waiting, c.Cond(queueing.ADMITTED, False, why, adm.message)],
                counts,
                apply_children=True,
                events=[("Warning", why, adm.message)] if why == Reason.PREEMPTED else [],
            )
        queued = [c.Cond(queueing.ADMITTED, True, Reason.ADMITTED, adm.message)]
    if problem := observe.scheduling_problem(pods):
        return plan(
            Phase.PENDING,
            c.standard(
                ready=False, reason=problem[0], message=problem[1], reconciling=True, **job_like
            )
            + queued,
            counts,
            apply_children=True,
            events=[("Warning", problem[0], problem[1])] if problem[0] in WARNINGS else [],
        )
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    # The attempt that runs has the workers its Job was built with, whatever the spec says now.
    workers = job["spec"].get("completions") or spec.get("workers", 1)
    done = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
    if (running and len(running) >= workers) or (prev.get("phase") == Phase.RUNNING and done):
        # Workers that exited 0 before their Job says Complete are finishing, not starting:
        # a phase moves forward only.
        pct = (prev.get("progress") or {}).get("percent")
        msg = (f"{len(running)} worker(s) training" if running else "workers finishing") + (
            f", {pct:.0f}%" if pct is not None else ""
        )
        return plan(
            Phase.RUNNING,
            c.standard(
                ready=False, reason=Reason.TRAINING, message=msg, reconciling=True, **job_like
            )
            + queued,
            {**counts, "start_time": kept["start_time"] or now},
            apply_children=True,
        )
    return plan(
        Phase.PENDING,
        c.standard(
            ready=False,
            reason=Reason.STARTING_WORKERS,
            reconciling=True,
            **job_like,
            message=f"{len(running)}/{workers} workers running",
        )
        + queued,
        counts,
        apply_children=True,
    )


def _finished(tj: dict[str, Any], prev: dict[str, Any], gen: int, now: datetime) -> Plan:
    """A finished run stays finished, like a Job. A spec edited afterwards is acknowledged
    truthfully: a condition says the change was not applied, and why."""
    conds = [x for x in prev.get("conditions") or [] if x.get("type") != SPEC_APPLIED]
    finished_at = (
        next((x.get("observedGeneration") for x in conds if x.get("type") == "Ready"), None) or gen
    )
    kept = c.keep(conds)
    if gen > finished_at:
        kept += c.merge(
            prev.get("conditions"),
            [
                c.Cond(
                    SPEC_APPLIED,
                    False,
                    Reason.SPEC_CHANGE_NOT_APPLIED,
                    f"the run finished at generation {finished_at}; a finished TrainingJob does not run "
                    "again: create a new TrainingJob to train with the changed spec",
                )
            ],
            gen,
            now,
        )
    carried: dict[str, Any] = {
        **{
            k: prev[k]
            for k in (
                "startTime",
                "restarts",
                "completionTime",
                "model",
                "active",
                "succeeded",
                "failed",
            )
            if k in prev
        },
        "observedGeneration": gen,
        "phase": prev["phase"],
    }
    status = TrainingJobStatus.model_validate(carried).model_copy(update={"conditions": kept})
    return Plan(status=status)


def _succeeded(
    prev: dict[str, Any],
    pods: list[dict[str, Any]],
    location: str,
    now: datetime,
    plan: Any,
    counts: dict[str, Any],
) -> Plan:
    result = next((r for p in pods if (r := observe.termination_result(p)) and "model" in r), {})
    model = {**(prev.get("model") or {}), **(result.get("model") or {})}
    # A model published to the artifact store is where the runtime says (s3://...); otherwise it
    # is on the output claim.
    if model and not str(model.get("location", "")).startswith("s3://"):
        model["location"] = location
    # Own code that exported nothing has no model: status.model stays unset.
    artifact = ModelArtifact.model_validate(model) if model else None
    acc = artifact.metrics.get("accuracy") if artifact else None
    msg = "training finished" + (f", test accuracy {acc:.4f}" if acc is not None else "")
    # An early-stopped run is complete, not at the percent of epochs it ran.
    progress = Progress.model_validate(
        {**(prev.get("progress") or {}), "percent": 100, "etaSeconds": 0}
    )
    return plan(
        Phase.SUCCEEDED,
        c.standard(ready=True, reason=Reason.SUCCEEDED, message=msg, succeeded=True, failed=False),
        {**counts, "completion_time": now, "model": artifact, "progress": progress},
        events=[("Normal", Reason.SUCCEEDED, msg)],
    )


def _failed(
    tj: dict[str, Any],
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    counts: dict[str, Any],
    plan: Any,
) -> Plan:
    spec = tj["spec"]
    failed = observe.failed_pods(pods)
    codes = observe.exit_codes(failed)
    result = next((r for p in failed if (r := observe.termination_result(p))), {})
    cond = observe.job_condition(job, "Failed") or {}
    permanent, extra = None, dict(counts)
    if cond.get("reason") == "DeadlineExceeded":
        permanent = (
            Reason.DEADLINE_EXCEEDED,
            f"activeDeadlineSeconds ({spec.get('activeDeadlineSeconds')}s) passed",
        )
    elif ExitCode.REJECTED in codes:
        permanent = (
            Reason.BELOW_EVALUATION_GATE,
            result.get("message") or "the model did not reach spec.evaluation.minimum",
        )
        if result.get("metrics"):
            extra["metrics"] = {"latest": result["metrics"]}
    elif ExitCode.INVALID_CONFIG in codes:
        permanent = (
            Reason.INVALID_CONFIG,
            result.get("message") or "the runtime rejected its config",
        )
    if permanent:
        return plan(
            Phase.FAILED,
            c.standard(
                ready=False,
                reason=permanent[0],
                message=permanent[1],
                stalled=True,
                succeeded=False,
                failed=True,
            ),
            extra,
            events=[("Warning", permanent[0], permanent[1])],
        )
    restarts = attempt(tj)
    detail = result.get("message") or cond.get("message") or "a worker failed"
    limit = spec.get("backoffLimit", 0)
    if restarts < limit:
        msg = f"restarting the group from the latest checkpoint ({restarts + 1}/{limit}): {detail}"
        return plan(
            Phase.RESTARTING,
            c.standard(
                ready=False,
                reason=Reason.WORKER_FAILED,
                message=msg,
                reconciling=True,
                succeeded=False,
                failed=False,
            ),
            {**extra, "restarts": restarts + 1},
            restart=True,
            events=[("Warning", Reason.WORKER_FAILED, msg)],
        )
    msg = f"failed after {restarts} restart(s), backoffLimit {limit}: {detail}"
    return plan(
        Phase.FAILED,
        c.standard(
            ready=False,
            reason=Reason.BACKOFF_LIMIT_EXCEEDED,
            message=msg,
            stalled=True,
            succeeded=False,
            failed=True,
        ),
        extra,
        events=[("Warning", Reason.BACKOFF_LIMIT_EXCEEDED, msg)],
    )


def with_unapplied_change(
    status: TrainingJobStatus, changed: list[str], attempt: int, now: datetime
) -> TrainingJobStatus:
    """A spec change the running attempt cannot take (a Job's pod template and worker count
    are fixed once it runs) is said in a condition, and applies at the next attempt. `changed`:
    the paths of the worker Job that differ from what the spec now asks; [] when none."""
    others = [x for x in status.conditions if x.type != SPEC_APPLIED]
    if not changed:
        return status.model_copy(update={"conditions": tuple(others)})
    what = sorted({_SPEC_WORDS.get(p.split("[")[0], "the worker pod template") for p in changed})
    gen = status.observed_generation or 1
    previous = [x.model_dump(mode="json", by_alias=True) for x in status.conditions]
    cond = c.Cond(
        SPEC_APPLIED,
        False,
        Reason.SPEC_CHANGE_NOT_APPLIED,
        f"generation {gen} changed {', '.join(what)} while attempt {attempt} runs; a running "
        "attempt keeps the spec it started with: the change applies if the run restarts",
    )
    merged = c.merge(previous, [cond], gen, now)
    return status.model_copy(update={"conditions": tuple(others) + merged})


_SPEC_WORDS = {"spec.completions": "workers", "spec.parallelism": "workers"}
# What differs between a running Job and the desired one without being a spec change: the
# deadline left is recomputed from the clock, and suspend is synced in place.
_NOT_CHANGES = ("activeDeadlineSeconds", "suspend")


def unapplied(desired_job: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """The paths of the running Job's spec that the spec now asks to be otherwise."""
    want = {k: v for k, v in desired_job["spec"].items() if k not in _NOT_CHANGES}
    return [f"spec.{p}" for p in drifted(want, job.get("spec") or {})]
