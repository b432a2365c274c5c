"""Prometheus metrics of the operator, served on their own port."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

RECONCILES = Counter("tauon_reconcile_total", "Reconciles by kind and result.", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "tauon_reconcile_duration_seconds",
    "Time one reconcile took.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter("tauon_api_writes_total", "API writes by verb and kind.", ["verb", "kind"])
DRIFT_REPAIRS = Counter(
    "tauon_drift_repairs_total",
    "Children put back after someone else changed or deleted a field the operator owns.",
    ["kind"],
)


class ObjectsByPhase(Collector):
    """tauon_objects{kind,phase}: read from the operator's cache at scrape time."""

    def __init__(self, objects: Callable[[str], Iterable[dict]]):
        self._objects = objects

    def collect(self):
        g = GaugeMetricFamily(
            "tauon_objects", "Custom resources by kind and phase.", labels=["kind", "phase"]
        )
        for kind in ("Dataset", "TrainingJob", "ModelDeployment"):
            phases = Tally(
                (o.get("status") or {}).get("phase") or "Unknown" for o in self._objects(kind)
            )
            for phase, n in sorted(phases.items()):
                g.add_metric([kind, phase], n)
        yield g


_registered = False


def register_objects_by_phase(objects: Callable[[str], Iterable[dict]]) -> None:
    """Once per process (an operator restarted in-process must not register twice)."""
    global _registered
    if not _registered:
        REGISTRY.register(ObjectsByPhase(objects))
        _registered = True
