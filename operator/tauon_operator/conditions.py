"""metav1.Condition bookkeeping: a transition time that moves only when the status does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from tauon_operator.api import FAILED, READY, RECONCILING, STALLED, SUCCEEDED


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


def merge(previous: Iterable[dict[str, Any]] | None, wanted: Iterable[Cond], generation: int,
          now: str) -> list[dict[str, Any]]:
    before = {c["type"]: c for c in previous or ()}
    out = []
    for c in wanted:
        status = "True" if c.status else "False"
        old = before.get(c.type)
        moved = old is None or old.get("status") != status
        out.append({
            "type": c.type,
            "status": status,
            "reason": c.reason,
            "message": c.message[:32768],
            "lastTransitionTime": now if moved else old.get("lastTransitionTime", now),
            "observedGeneration": generation,
        })
    return out


def standard(*, ready: bool, reason: str, message: str, reconciling: bool = False,
             stalled: bool = False, succeeded: bool | None = None,
             failed: bool | None = None) -> list[Cond]:
    """The kstatus trio (Ready, Reconciling, Stalled), plus Succeeded/Failed on job-like kinds."""
    conds = [
        Cond(READY, ready, reason, message),
        Cond(RECONCILING, reconciling, reason if reconciling else "Idle",
             message if reconciling else ""),
        Cond(STALLED, stalled, reason if stalled else "Progressing", message if stalled else ""),
    ]
    if succeeded is not None:
        conds.append(Cond(SUCCEEDED, succeeded, reason if succeeded else "NotSucceeded",
                          message if succeeded else ""))
    if failed is not None:
        conds.append(Cond(FAILED, failed, reason if failed else "NotFailed",
                          message if failed else ""))
    return conds
