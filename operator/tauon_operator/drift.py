"""Whether the cluster still holds what the operator wants of a child.

The operator applies a child with server-side apply and owns the fields it sets; anything else
on the object (defaults the API server fills in, fields other managers own: an HPA's replicas,
a binder's volumeName, others' labels and annotations) is not ours and never counts as drift.
So a child has drifted when a field we set has another value in the cluster, or is gone — the
comparison is with the cluster (the watch cache), not with what we last applied."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity


def drifted(desired: Any, current: Any, path: str = "") -> list[str]:
    """The paths of the fields in `desired` that `current` does not hold ([] when none)."""
    if isinstance(desired, dict):
        if not isinstance(current, dict):
            return [] if not desired and current is None else [path or "."]
        out: list[str] = []
        for key, want in desired.items():
            out += drifted(want, current.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(desired, list):
        if not desired and current is None:  # the API server drops an empty list
            return []
        if not isinstance(current, list) or len(current) != len(desired):
            return [path]
        return [
            p
            for i, (w, c) in enumerate(zip(desired, current, strict=True))
            for p in drifted(w, c, f"{path}[{i}]")
        ]
    if desired is None or desired == current:
        return []
    if _scalar(desired) and _scalar(current) and _same_quantity(desired, current):
        return []
    return [path]


def _scalar(x: Any) -> bool:
    return isinstance(x, str | int | float) and not isinstance(x, bool)


def _same_quantity(a: str | float, b: str | float) -> bool:
    """1 and "1", "0.5" and "500m": the API server writes quantities canonically."""
    try:
        return bool(_quantity(a) == _quantity(b))
    except (ValueError, InvalidOperation):
        return False


def _quantity(x: str | float) -> Decimal:
    return Decimal(parse_quantity(x))
