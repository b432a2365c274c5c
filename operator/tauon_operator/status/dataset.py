"""Dataset status from its prepare Job, its pods' results and the claim."""

from __future__ import annotations

from typing import Any

from tauon_operator import conditions as c
from tauon_operator.status import observe


def dataset_status(ds: dict[str, Any], claim_name: str, job: dict[str, Any] | None,
                   pods: list[dict[str, Any]], now: str) -> dict[str, Any]:
    prev = ds.get("status") or {}
    gen = ds["metadata"].get("generation", 1)
    out: dict[str, Any] = {"observedGeneration": gen, "claimName": claim_name}
    finished = observe.job_finished(job)
    if job is None:
        phase, conds = "Pending", c.standard(ready=False, reason="Creating", reconciling=True,
                                             message="creating the prepare Job", succeeded=False,
                                             failed=False)
    elif finished == "Complete":
        result = next((r for p in pods if (r := observe.termination_result(p))
                       and r.get("result") == "succeeded"), {})
        for key in ("digest", "bytes"):
            if key in result:
                out[key] = result[key]
        if "counts" in result:
            counts = dict(result["counts"])
            counts.setdefault("total", sum(v for v in counts.values() if isinstance(v, int)))
            out["counts"] = counts
        total = (out.get("counts") or prev.get("counts") or {}).get("total")
        digest = out.get("digest") or prev.get("digest")
        msg = f"{total} samples prepared" if total else "prepared"
        if digest:
            msg += f", digest {digest}"
        phase, conds = "Ready", c.standard(ready=True, reason="Prepared", message=msg,
                                           succeeded=True, failed=False)
    elif finished == "Failed":
        reason, message = _failure(job, pods)
        phase, conds = "Failed", c.standard(ready=False, reason=reason, message=message,
                                            stalled=True, succeeded=False, failed=True)
    else:
        phase, conds = "Preparing", c.standard(ready=False, reason="Preparing", reconciling=True,
                                               message="the prepare Job is running",
                                               succeeded=False, failed=False)
        if problem := observe.scheduling_problem(pods):
            conds = c.standard(ready=False, reason=problem[0], message=problem[1],
                               reconciling=True, succeeded=False, failed=False)
    out["phase"] = phase
    out["conditions"] = c.merge(prev.get("conditions"), conds, gen, now)
    return out


def _failure(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str]:
    """The runtime's own reason (ChecksumMismatch, InvalidConfig, …) when it left one."""
    for p in reversed(observe.failed_pods(pods)):
        result = observe.termination_result(p) or {}
        if result.get("message"):
            return result.get("error") or "PrepareFailed", result["message"]
    cond = observe.job_condition(job, "Failed") or {}
    return cond.get("reason") or "PrepareFailed", cond.get("message") or "the prepare Job failed"
