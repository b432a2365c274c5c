"""Dataset status from its prepare Job, its pods' results and the claim."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tauon_operator import conditions as c
from tauon_operator.api import DatasetStatus, SplitCounts
from tauon_operator.api.dataset import DatasetPhase as Phase
from tauon_operator.status import observe


def dataset_status(
    ds: dict[str, Any],
    claim_name: str,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: datetime,
) -> DatasetStatus:
    prev = ds.get("status") or {}
    gen = ds["metadata"].get("generation", 1)
    found: dict[str, Any] = {}
    finished = observe.job_finished(job)
    if job is None:
        phase, conds = (
            Phase.PENDING,
            c.standard(
                ready=False,
                reason="Creating",
                reconciling=True,
                message="creating the prepare Job",
                succeeded=False,
                failed=False,
            ),
        )
    elif finished == "Complete":
        result = next(
            (
                r
                for p in pods
                if (r := observe.termination_result(p)) and r.get("result") == "succeeded"
            ),
            {},
        )
        found = {k: result[k] for k in ("digest", "bytes", "location") if k in result}
        if "counts" in result:
            counts = {k: v for k, v in result["counts"].items() if isinstance(v, int)}
            found["counts"] = SplitCounts(**{"total": sum(counts.values()), **counts})
        counts_now = found.get("counts") or SplitCounts.model_validate(prev.get("counts") or {})
        digest = found.get("digest") or prev.get("digest")
        msg = f"{counts_now.total} samples prepared" if counts_now.total else "prepared"
        if digest:
            msg += f", digest {digest}"
        phase, conds = (
            Phase.READY,
            c.standard(ready=True, reason="Prepared", message=msg, succeeded=True, failed=False),
        )
    elif finished == "Failed":
        reason, message = _failure(job, pods)
        phase, conds = (
            Phase.FAILED,
            c.standard(
                ready=False,
                reason=reason,
                message=message,
                stalled=True,
                succeeded=False,
                failed=True,
            ),
        )
    else:
        phase, conds = (
            Phase.PREPARING,
            c.standard(
                ready=False,
                reason="Preparing",
                reconciling=True,
                message="the prepare Job is running",
                succeeded=False,
                failed=False,
            ),
        )
        if problem := observe.scheduling_problem(pods):
            conds = c.standard(
                ready=False,
                reason=problem[0],
                message=problem[1],
                reconciling=True,
                succeeded=False,
                failed=False,
            )
    return DatasetStatus(
        observed_generation=gen,
        phase=phase,
        claim_name=claim_name,
        conditions=c.merge(prev.get("conditions"), conds, gen, now),
        **found,
    )


def _failure(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str]:
    """The runtime's own reason (ChecksumMismatch, InvalidConfig, …) when it left one."""
    for p in reversed(observe.failed_pods(pods)):
        result = observe.termination_result(p) or {}
        if result.get("message"):
            return result.get("error") or "PrepareFailed", result["message"]
    cond = observe.job_condition(job, "Failed") or {}
    return cond.get("reason") or "PrepareFailed", cond.get("message") or "the prepare Job failed"


def waiting_status(
    ds: dict[str, Any], reason: str, message: str, stalled: bool, now: datetime
) -> DatasetStatus:
    """Nothing can be prepared yet (a feedback source's base is not Ready), or ever (no store)."""
    prev = ds.get("status") or {}
    gen = ds["metadata"].get("generation", 1)
    conds = c.standard(
        ready=False,
        reason=reason,
        message=message,
        stalled=stalled,
        reconciling=not stalled,
        succeeded=False,
        failed=stalled,
    )
    return DatasetStatus(
        observed_generation=gen,
        phase=Phase.FAILED if stalled else Phase.PENDING,
        conditions=c.merge(prev.get("conditions"), conds, gen, now),
    )
