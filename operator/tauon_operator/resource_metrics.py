"""Per-resource series of TrainingJobs and ModelDeployments, in the manner of kube-state-metrics.

They are read from the operator's cache at scrape time, not kept beside it: a resource's series
exist exactly while the resource does (deleting it removes them at the next scrape, with no
bookkeeping to forget), and every resource adds a fixed, small number of series labelled only
`namespace` and `name` plus enumerated values (phase, track, a capped set of metric names).
bench/monitoring_series.py counts them; docs/monitoring.md lists them.

The one thing not in the cache is *when* a run last made progress: status holds the progress,
not its time. A small clock notes, per run, when its progress was last seen to change (at
scrape time; on first sight the run's start time if it has not progressed yet). An operator
restart resets it to "now" for runs that had progressed: an alert on stalled runs then waits a
full threshold again rather than firing on a guess.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector

from tauon_operator.api.modeldeployment import ModelDeploymentPhase
from tauon_operator.api.trainingjob import TrainingJobPhase

LABELS = ["namespace", "name"]
TRAININGJOB_PHASES = tuple(p.value for p in TrainingJobPhase)
MODELDEPLOYMENT_PHASES = tuple(p.value for p in ModelDeploymentPhase)
# Metric names come from the runtime, which may patch its own job's status: only names of this
# shape, and at most this many per map, become label values.
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
MAX_METRICS = 8

Objects = Callable[[str], Iterable[Mapping[str, Any]]]
Key = tuple[str, str, str]  # (namespace, name, uid)


def _labels(obj: Mapping[str, Any]) -> list[str]:
    meta = obj["metadata"]
    return [meta.get("namespace", ""), meta["name"]]


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"], meta.get("uid", "")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def capped_metrics(values: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    """(name, value) of a status metrics map: well-formed names, numbers, at most MAX_METRICS."""
    out = []
    for name in sorted(values or {}):
        number = _number((values or {})[name])
        if METRIC_NAME.match(name) and number is not None:
            out.append((name, number))
    return out[:MAX_METRICS]


class ProgressClock:
    """When each run's progress (epoch, step, percent) was last seen to change."""

    def __init__(self) -> None:
        self._seen: dict[Key, tuple[tuple[Any, ...], float]] = {}
        self._lock = threading.Lock()  # two scrapes may collect at once

    def observe(self, jobs: Iterable[Mapping[str, Any]], now: float) -> dict[Key, float]:
        """The last-progress time of each job; forgets jobs that are gone."""
        seen: dict[Key, tuple[tuple[Any, ...], float]] = {}
        with self._lock:
            for tj in jobs:
                status = tj.get("status") or {}
                progress = status.get("progress") or {}
                mark = tuple(progress.get(k) for k in ("epoch", "step", "percent"))
                previous = self._seen.get(key := _key(tj))
                if previous is None:  # first sight: its start, if it has not progressed yet
                    start = _timestamp(status.get("startTime"))
                    t = min(start, now) if start is not None and not any(mark) else now
                else:
                    t = now if previous[0] != mark else previous[1]
                seen[key] = (mark, t)
            self._seen = seen
        return {key: t for key, (_, t) in seen.items()}


def trainingjob_families(
    jobs: Iterable[Mapping[str, Any]], last_progress: Mapping[Key, float]
) -> list[Metric]:
    phase = GaugeMetricFamily(
        "tauon_trainingjob_phase",
        "1 for the TrainingJob's current phase, 0 for the others.",
        labels=[*LABELS, "phase"],
    )
    progress = GaugeMetricFamily(
        "tauon_trainingjob_progress_ratio",
        "Share of the run completed, 0-1 (status.progress.percent / 100).",
        labels=LABELS,
    )
    epoch = GaugeMetricFamily(
        "tauon_trainingjob_epoch", "Epochs completed (status.progress.epoch).", labels=LABELS
    )
    epochs = GaugeMetricFamily(
        "tauon_trainingjob_epochs", "Epochs planned (status.progress.totalEpochs).", labels=LABELS
    )
    restarts = CounterMetricFamily(
        "tauon_trainingjob_restarts",
        "Times the run was restarted from a checkpoint (status.restarts).",
        labels=LABELS,
    )
    progressed = GaugeMetricFamily(
        "tauon_trainingjob_last_progress_timestamp_seconds",
        "Unix time the run's progress was last seen to change (its start time before any).",
        labels=LABELS,
    )
    latest = GaugeMetricFamily(
        "tauon_trainingjob_latest_metric",
        "Latest evaluation (status.metrics.latest): validation during training, then test.",
        labels=[*LABELS, "metric"],
    )
    best = GaugeMetricFamily(
        "tauon_trainingjob_best_metric",
        "Best validation value so far (status.metrics.best).",
        labels=[*LABELS, "metric"],
    )
    model = GaugeMetricFamily(
        "tauon_trainingjob_model_metric",
        "Test metrics of the exported model (status.model.metrics), once the run succeeded.",
        labels=[*LABELS, "metric"],
    )
    for tj in jobs:
        labels = _labels(tj)
        status = tj.get("status") or {}
        for p in TRAININGJOB_PHASES:
            phase.add_metric([*labels, p], 1.0 if status.get("phase") == p else 0.0)
        done = status.get("progress") or {}
        progress.add_metric(labels, (_number(done.get("percent")) or 0.0) / 100)
        epoch.add_metric(labels, _number(done.get("epoch")) or 0.0)
        if (total := _number(done.get("totalEpochs"))) is not None:
            epochs.add_metric(labels, total)
        restarts.add_metric(labels, _number(status.get("restarts")) or 0.0)
        if (t := last_progress.get(_key(tj))) is not None:
            progressed.add_metric(labels, t)
        m = status.get("metrics") or {}
        for family, values in (
            (latest, m.get("latest")),
            (best, m.get("best")),
            (model, (status.get("model") or {}).get("metrics")),
        ):
            for name, value in capped_metrics(values):
                family.add_metric([*labels, name], value)
    return [phase, progress, epoch, epochs, restarts, progressed, latest, best, model]


def modeldeployment_families(deployments: Iterable[Mapping[str, Any]]) -> list[Metric]:
    phase = GaugeMetricFamily(
        "tauon_modeldeployment_phase",
        "1 for the ModelDeployment's current phase, 0 for the others.",
        labels=[*LABELS, "phase"],
    )
    desired = GaugeMetricFamily(
        "tauon_modeldeployment_desired_replicas",
        "Serving replicas wanted, stable and canary together (status.replicas.desired).",
        labels=LABELS,
    )
    ready = GaugeMetricFamily(
        "tauon_modeldeployment_ready_replicas",
        "Serving replicas ready, stable and canary together (status.replicas.ready).",
        labels=LABELS,
    )
    served = InfoMetricFamily(
        "tauon_modeldeployment_model",
        "The model digest (sha256 of the weights) each track serves.",
        labels=[*LABELS, "track", "digest"],
    )
    canary = GaugeMetricFamily(
        "tauon_modeldeployment_canary_traffic_ratio",
        "Share of the requests sent to the canary, 0-1 (0 without a canary).",
        labels=LABELS,
    )
    feedback = GaugeMetricFamily(
        "tauon_modeldeployment_feedback_records",
        "Feedback records stored (status.feedbackCount, where reported).",
        labels=LABELS,
    )
    for md in deployments:
        labels = _labels(md)
        status = md.get("status") or {}
        for p in MODELDEPLOYMENT_PHASES:
            phase.add_metric([*labels, p], 1.0 if status.get("phase") == p else 0.0)
        replicas = status.get("replicas") or {}
        desired.add_metric(labels, _number(replicas.get("desired")) or 0.0)
        ready.add_metric(labels, _number(replicas.get("ready")) or 0.0)
        c = status.get("canary") or {}
        for track, digest in (
            ("stable", status.get("modelDigest")),
            ("canary", c.get("modelDigest")),
        ):
            if isinstance(digest, str) and digest:
                served.add_metric([*labels, track, digest[:64]], {})
        canary.add_metric(labels, (_number(c.get("trafficPercent")) or 0.0) / 100)
        if (n := _number(status.get("feedbackCount"))) is not None:
            feedback.add_metric(labels, n)
    return [phase, desired, ready, served, canary, feedback]


def snapshot(objects: Objects, kind: str) -> list[Mapping[str, Any]]:
    """The cache's objects of a kind, listed from the scrape's thread while the event loop may
    be changing the cache: a listing that raced a change is simply taken again."""
    for _ in range(10):
        try:
            return list(objects(kind))
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return list(objects(kind))


class ResourceMetrics(Collector):
    def __init__(self, objects: Objects, clock: Callable[[], float] = time.time):
        self._objects = objects
        self._clock = clock
        self.progress = ProgressClock()

    def collect(self) -> Iterator[Metric]:
        jobs = snapshot(self._objects, "TrainingJob")
        deployments = snapshot(self._objects, "ModelDeployment")
        yield from trainingjob_families(jobs, self.progress.observe(jobs, self._clock()))
        yield from modeldeployment_families(deployments)


class WorkQueue(Collector):
    """The reconcile queue's depth, what is being reconciled, and keys backing off."""

    def __init__(self, stats: Callable[[], Mapping[str, int]]):
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name, help_ in (
            ("depth", "Keys waiting in the reconcile queue."),
            ("active", "Keys being reconciled now."),
            ("retrying", "Keys whose last reconcile failed, waiting out their backoff."),
        ):
            yield GaugeMetricFamily(f"tauon_workqueue_{name}", help_, value=stats.get(name, 0))


_registered: list[Collector] = []


def register(objects: Objects, queue: Callable[[], Mapping[str, int]]) -> None:
    """Once per process (an operator restarted in-process must not register twice)."""
    if not _registered:
        _registered.extend([ResourceMetrics(objects), WorkQueue(queue)])
        for collector in _registered:
            REGISTRY.register(collector)
