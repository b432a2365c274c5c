"""TrainingJob status, and the next step, from its Dataset, its worker Job and their pods."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tauon_runtime.contract.keys import ExitCode

from tauon_operator import conditions as c
from tauon_operator.status import observe

TERMINAL = ("Succeeded", "Failed")
WARNINGS = ("Unschedulable", "ImagePullBackOff")  # what a user must act on; not a passing wait


@dataclass(frozen=True)
class Plan:
    """What the reconcile should do: the status to write and the actions to take."""

    status: dict[str, Any]
    apply_children: bool = False  # the Dataset is ready: the workers may exist
    restart: bool = False  # replace the failed worker Job with the next attempt
    stop: bool = False  # a terminal state that needs the running Job gone (deadline passed)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def attempt(tj: dict[str, Any]) -> int:
    return int((tj.get("status") or {}).get("restarts") or 0)


def deadline_left(tj: dict[str, Any], now: datetime) -> int | None:
    limit = tj["spec"].get("activeDeadlineSeconds")
    started = (tj.get("status") or {}).get("startTime")
    if limit is None:
        return None
    if not started:
        return int(limit)
    elapsed = (now - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
    return int(limit - elapsed)


def trainingjob_plan(tj: dict[str, Any], dataset: dict[str, Any] | None,
                     job: dict[str, Any] | None, pods: list[dict[str, Any]],
                     now: datetime, model_location: str) -> Plan:
    prev = tj.get("status") or {}
    spec = tj["spec"]
    gen = tj["metadata"].get("generation", 1)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    base = {k: prev[k] for k in ("startTime", "restarts") if k in prev}
    out: dict[str, Any] = {"observedGeneration": gen, **base}
    job_like = {"succeeded": False, "failed": False}

    def plan(phase: str, conds: list[c.Cond], **kw: Any) -> Plan:
        out["phase"] = phase
        out["conditions"] = c.merge(prev.get("conditions"), conds, gen, stamp)
        return Plan(status=out, **kw)

    if prev.get("phase") in TERMINAL:  # a finished run stays finished, like a Job
        out.update({k: prev[k] for k in ("completionTime", "model") if k in prev})
        return Plan(status={**out, "phase": prev["phase"], "conditions": prev.get("conditions", [])})

    ds_name = spec["datasetRef"]["name"]
    if dataset is None:
        return plan("Pending", c.standard(
            ready=False, reason="DatasetNotFound", stalled=True,
            message=f"Dataset {ds_name!r} does not exist in this namespace", **job_like))
    ds_phase = (dataset.get("status") or {}).get("phase")
    if ds_phase == "Failed":
        return plan("Pending", c.standard(
            ready=False, reason="DatasetFailed", stalled=True,
            message=f"Dataset {ds_name!r} failed to prepare", **job_like))
    if ds_phase != "Ready":
        return plan("Pending", c.standard(
            ready=False, reason="WaitingForDataset", reconciling=True,
            message=f"waiting for Dataset {ds_name!r} to be Ready", **job_like))

    left = deadline_left(tj, now)
    if left is not None and left <= 0 and observe.job_finished(job) != "Complete":
        return plan("Failed", c.standard(
            ready=False, reason="DeadlineExceeded", stalled=True, succeeded=False, failed=True,
            message=f"activeDeadlineSeconds ({spec['activeDeadlineSeconds']}s) passed"),
            stop=True, events=[("Warning", "DeadlineExceeded", "the run passed its deadline")])

    if job is None:
        return plan("Pending", c.standard(ready=False, reason="Creating", reconciling=True,
                                          message="creating the worker pods", **job_like),
                    apply_children=True)

    st = job.get("status") or {}
    out.update({"active": st.get("active", 0), "succeeded": st.get("succeeded", 0),
                "failed": st.get("failed", 0)})
    finished = observe.job_finished(job)
    if finished == "Complete":
        result = next((r for p in pods if (r := observe.termination_result(p)) and "model" in r), {})
        out["completionTime"] = stamp
        model = prev.get("model") or {}
        if result.get("model"):
            model = {**model, **result["model"]}
        if model:
            out["model"] = {**model, "location": model_location}
        acc = (model.get("metrics") or {}).get("accuracy")
        msg = "training finished" + (f", test accuracy {acc:.4f}" if acc is not None else "")
        return plan("Succeeded", c.standard(ready=True, reason="Succeeded", message=msg,
                                            succeeded=True, failed=False),
                    events=[("Normal", "Succeeded", msg)])
    if finished == "Failed":
        return _failed(tj, job, pods, out, plan)

    if spec.get("suspend"):
        return plan("Suspended", c.standard(ready=False, reason="Suspended", **job_like,
                                            message="suspended: workers stopped, checkpoints kept"),
                    apply_children=True)
    if problem := observe.scheduling_problem(pods):
        return plan("Pending", c.standard(ready=False, reason=problem[0], message=problem[1],
                                          reconciling=True, **job_like),
                    apply_children=True,
                    events=[("Warning", problem[0], problem[1])] if problem[0] in WARNINGS else [])
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if running and len(running) >= spec.get("workers", 1):
        out.setdefault("startTime", stamp)
        progress = (prev.get("progress") or {})
        pct = progress.get("percent")
        msg = f"{len(running)} worker(s) training" + (f", {pct:.0f}%" if pct is not None else "")
        return plan("Running", c.standard(ready=False, reason="Training", message=msg,
                                          reconciling=True, **job_like), apply_children=True)
    return plan("Pending", c.standard(ready=False, reason="StartingWorkers", reconciling=True,
                                      message=f"{len(running)}/{spec.get('workers', 1)} workers running",
                                      **job_like), apply_children=True)


def _failed(tj, job, pods, out, plan) -> Plan:
    spec = tj["spec"]
    failed = observe.failed_pods(pods)
    codes = observe.exit_codes(failed)
    result = next((r for p in failed if (r := observe.termination_result(p))), {})
    cond = observe.job_condition(job, "Failed") or {}
    permanent = None
    if cond.get("reason") == "DeadlineExceeded":
        permanent = ("DeadlineExceeded", f"activeDeadlineSeconds ({spec.get('activeDeadlineSeconds')}s) passed")
    elif ExitCode.REJECTED in codes:
        permanent = ("BelowEvaluationGate", result.get("message")
                     or "the model did not reach spec.evaluation.minimum")
        if result.get("metrics"):
            out["metrics"] = {"latest": result["metrics"]}
    elif ExitCode.INVALID_CONFIG in codes:
        permanent = ("InvalidConfig", result.get("message") or "the runtime rejected its config")
    if permanent:
        return plan("Failed", c.standard(ready=False, reason=permanent[0], message=permanent[1],
                                         stalled=True, succeeded=False, failed=True),
                    events=[("Warning", permanent[0], permanent[1])])
    restarts = attempt(tj)
    detail = result.get("message") or cond.get("message") or "a worker failed"
    if restarts < spec.get("backoffLimit", 0):
        out["restarts"] = restarts + 1
        msg = f"restarting the group from the latest checkpoint ({restarts + 1}/{spec.get('backoffLimit')}): {detail}"
        return plan("Restarting", c.standard(ready=False, reason="WorkerFailed", message=msg,
                                             reconciling=True, succeeded=False, failed=False),
                    restart=True, events=[("Warning", "WorkerFailed", msg)])
    msg = f"failed after {restarts} restart(s), backoffLimit {spec.get('backoffLimit', 0)}: {detail}"
    return plan("Failed", c.standard(ready=False, reason="BackoffLimitExceeded", message=msg,
                                     stalled=True, succeeded=False, failed=True),
                events=[("Warning", "BackoffLimitExceeded", msg)])
