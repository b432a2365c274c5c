"""metav1.Condition bookkeeping: a transition time that moves only when the status does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tauon_operator.api import FAILED, READY, RECONCILING, STALLED, SUCCEEDED, Condition


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


def merge(
    previous: Iterable[Mapping[str, Any]] | None,
    wanted: Iterable[Cond],
    generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """The wanted conditions as `metav1.Condition`s; a condition whose status did not change
    keeps the transition time it had."""
    before = {c["type"]: c for c in previous or ()}
    out = []
    for c in wanted:
        status = "True" if c.status else "False"
        old = before.get(c.type)
        moved = old is None or old.get("status") != status or not old.get("lastTransitionTime")
        since = now if moved or old is None else old["lastTransitionTime"]
        out.append(
            Condition(
                type=c.type,
                status=status,
                reason=c.reason,
                message=c.message[:32768],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return tuple(out)


def keep(previous: Iterable[Mapping[str, Any]] | None) -> tuple[Condition, ...]:
    """Conditions as they are (a finished run's, say), as models."""
    return tuple(Condition.model_validate(c) for c in previous or ())


def standard(
    *,
    ready: bool,
    reason: str,
    message: str,
    reconciling: bool = False,
    stalled: bool = False,
    succeeded: bool | None = None,
    failed: bool | None = None,
) -> list[Cond]:
    """The kstatus trio (Ready, Reconciling, Stalled), plus Succeeded/Failed on job-like kinds."""
    conds = [
        Cond(READY, ready, reason, message),
        Cond(
            RECONCILING,
            reconciling,
            reason if reconciling else "Idle",
            message if reconciling else "",
        ),
        Cond(STALLED, stalled, reason if stalled else "Progressing", message if stalled else ""),
    ]
    if succeeded is not None:
        conds.append(
            Cond(
                SUCCEEDED,
                succeeded,
                reason if succeeded else "NotSucceeded",
                message if succeeded else "",
            )
        )
    if failed is not None:
        conds.append(
            Cond(FAILED, failed, reason if failed else "NotFailed", message if failed else "")
        )
    return conds
