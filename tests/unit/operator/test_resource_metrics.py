"""Per-resource series (tauon_operator.resource_metrics): what each status becomes, that
cardinality stays bounded, and that a deleted resource's series go with it."""

from __future__ import annotations

from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tauon_operator.resource_metrics import (
    MAX_METRICS,
    ProgressClock,
    ResourceMetrics,
    WorkQueue,
    capped_metrics,
)

T0 = 1_800_000_000.0


def trainingjob(name="digits-cnn", ns="ml", uid="u1", **status) -> dict:
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": ns, "uid": uid}, "status": status}


def modeldeployment(name="digits", ns="ml", **status) -> dict:
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns, "uid": "m1"}, "status": status}


SUCCEEDED = dict(
    phase="Succeeded", restarts=1, startTime="2027-01-15T08:00:00Z",
    progress={"epoch": 8, "totalEpochs": 8, "step": 360, "totalSteps": 360, "percent": 100.0},
    metrics={"latest": {"loss": 0.08, "accuracy": 0.97, "f1": 0.97, "trainLoss": 0.05},
             "best": {"loss": 0.07, "accuracy": 0.975, "f1": 0.974, "trainLoss": 0.06}},
    model={"sha256": "a" * 64, "metrics": {"loss": 0.09, "accuracy": 0.9611, "f1": 0.96}},
)
READY_WITH_CANARY = dict(
    phase="Ready", modelDigest="a" * 64, replicas={"desired": 4, "ready": 4, "updated": 3},
    canary={"modelDigest": "b" * 64, "readyReplicas": 1, "trafficPercent": 25},
)


class Cache:
    def __init__(self, *objects):
        self.objects = list(objects)

    def __call__(self, kind):
        return [o for o in self.objects if o["kind"] == kind]


def scrape(*collectors) -> dict[tuple[str, tuple], float]:
    """name{labels} -> value, through the text exposition a Prometheus reads."""
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, series, /, **labels):
    return samples[(series, tuple(sorted(labels.items())))]


def test_a_succeeded_trainingjob_reads_as_its_status():
    s = scrape(ResourceMetrics(Cache(trainingjob(**SUCCEEDED)), clock=lambda: T0))
    who = {"namespace": "ml", "name": "digits-cnn"}
    assert value(s, "tauon_trainingjob_phase", **who, phase="Succeeded") == 1
    for other in ("Pending", "Running", "Suspended", "Restarting", "Failed"):
        assert value(s, "tauon_trainingjob_phase", **who, phase=other) == 0
    assert value(s, "tauon_trainingjob_progress_ratio", **who) == 1.0
    assert value(s, "tauon_trainingjob_epoch", **who) == 8
    assert value(s, "tauon_trainingjob_epochs", **who) == 8
    assert value(s, "tauon_trainingjob_restarts_total", **who) == 1
    assert value(s, "tauon_trainingjob_model_metric", **who, metric="accuracy") == 0.9611
    assert value(s, "tauon_trainingjob_latest_metric", **who, metric="trainLoss") == 0.05
    assert value(s, "tauon_trainingjob_best_metric", **who, metric="accuracy") == 0.975
    # It had progressed before the operator first saw it: when is unknown, so "now".
    assert value(s, "tauon_trainingjob_last_progress_timestamp_seconds", **who) == T0


def test_a_modeldeployment_with_a_canary_reads_as_its_status():
    s = scrape(ResourceMetrics(Cache(modeldeployment(**READY_WITH_CANARY))))
    who = {"namespace": "ml", "name": "digits"}
    assert value(s, "tauon_modeldeployment_phase", **who, phase="Ready") == 1
    assert value(s, "tauon_modeldeployment_phase", **who, phase="Degraded") == 0
    assert value(s, "tauon_modeldeployment_desired_replicas", **who) == 4
    assert value(s, "tauon_modeldeployment_ready_replicas", **who) == 4
    assert value(s, "tauon_modeldeployment_model_info", **who, track="stable", digest="a" * 64) == 1
    assert value(s, "tauon_modeldeployment_model_info", **who, track="canary", digest="b" * 64) == 1
    assert value(s, "tauon_modeldeployment_canary_traffic_ratio", **who) == 0.25
    assert not [k for k in s if k[0] == "tauon_modeldeployment_feedback_records"]  # not reported


@pytest.mark.parametrize("status", [{}, {"phase": "Pending"}, {"progress": None, "metrics": None}])
def test_a_fresh_resource_has_zeros_not_errors(status):
    s = scrape(ResourceMetrics(Cache(trainingjob(**status), modeldeployment(**status))))
    assert value(s, "tauon_trainingjob_progress_ratio", namespace="ml", name="digits-cnn") == 0
    assert value(s, "tauon_modeldeployment_ready_replicas", namespace="ml", name="digits") == 0
    assert not [k for k in s if k[0] == "tauon_modeldeployment_model_info"]


def test_only_namespace_name_and_enumerated_labels():
    s = scrape(ResourceMetrics(Cache(trainingjob(**SUCCEEDED), modeldeployment(**READY_WITH_CANARY))))
    allowed = {"namespace", "name", "phase", "metric", "track", "digest"}
    assert {k for _, labels in s for k, _ in labels} <= allowed


def test_a_runtime_cannot_blow_up_the_metric_label():
    """The runtime patches its own status: names it invents are capped and filtered."""
    hostile = {f"m{i}": float(i) for i in range(1000)} | {"a b": 1.0, "x" * 40: 1.0, "s": "text"}
    kept = capped_metrics(hostile)
    assert len(kept) == MAX_METRICS
    assert all(" " not in n and len(n) <= 32 for n, _ in kept)
    s = scrape(ResourceMetrics(Cache(trainingjob(metrics={"latest": hostile, "best": hostile}))))
    assert len([k for k in s if k[0] == "tauon_trainingjob_latest_metric"]) == MAX_METRICS


def test_series_per_resource_are_a_fixed_number():
    one = scrape(ResourceMetrics(Cache(trainingjob(**SUCCEEDED), modeldeployment(**READY_WITH_CANARY))))
    many = scrape(ResourceMetrics(Cache(*(trainingjob(f"tj{i}", uid=f"u{i}", **SUCCEEDED) for i in range(50)),
                                        *(modeldeployment(f"md{i}", **READY_WITH_CANARY) for i in range(50)))))
    assert len(many) == 50 * len(one)


def test_a_deleted_resource_takes_its_series_with_it():
    cache = Cache(trainingjob(**SUCCEEDED), modeldeployment(**READY_WITH_CANARY))
    collector = ResourceMetrics(cache)
    assert any(k[0] == "tauon_trainingjob_phase" for k in scrape(collector))
    cache.objects.clear()
    assert scrape(collector) == {}
    assert collector.progress.observe([], T0) == {}  # the clock forgot it too


def test_the_progress_clock_moves_only_with_progress():
    clock = ProgressClock()
    running = trainingjob(phase="Running", startTime="2027-01-15T08:00:00Z")
    start = datetime.fromisoformat("2027-01-15T08:00:00+00:00").timestamp()
    # No progress yet: the start time is the last "progress".
    assert clock.observe([running], start + 50) == {("ml", "digits-cnn", "u1"): start}
    running["status"]["progress"] = {"epoch": 1, "step": 10, "percent": 12.5}
    assert clock.observe([running], start + 60)[("ml", "digits-cnn", "u1")] == start + 60
    assert clock.observe([running], start + 900)[("ml", "digits-cnn", "u1")] == start + 60
    running["status"]["progress"] = {"epoch": 1, "step": 20, "percent": 25.0, "etaSeconds": 5}
    assert clock.observe([running], start + 901)[("ml", "digits-cnn", "u1")] == start + 901


def test_a_recreated_job_starts_a_new_clock():
    clock = ProgressClock()
    clock.observe([trainingjob(uid="old", progress={"epoch": 3})], T0)
    assert clock.observe([trainingjob(uid="new", progress={"epoch": 3})], T0 + 99) == {
        ("ml", "digits-cnn", "new"): T0 + 99}


def test_a_listing_that_races_the_event_loop_is_taken_again():
    calls = []

    def flaky(kind):
        calls.append(kind)
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return [trainingjob(**SUCCEEDED)] if kind == "TrainingJob" else []

    assert scrape(ResourceMetrics(flaky))


def test_the_work_queue_gauges():
    s = scrape(WorkQueue(lambda: {"depth": 7, "active": 2, "retrying": 1}))
    assert (value(s, "tauon_workqueue_depth"), value(s, "tauon_workqueue_active"),
            value(s, "tauon_workqueue_retrying")) == (7, 2, 1)
