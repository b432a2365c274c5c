"""Reconcile-level rules at unit speed, against a fake API that records every request (as
Kubeflow's trainjob_controller_test does): what is written, in which order, and what is pruned.
The real API server keeps proving the rest (tests/integration)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tauon_operator.controller import Controller, backoff, utcnow
from tauon_operator.handlers import dataset, modeldeployment, trainingjob
from tauon_operator.settings import Settings

NS = "ml"


class FakeKube:
    """Answers like the API server would, and records (verb, kind, name) in order."""

    def __init__(self, refuse: dict[str, int] | None = None):
        self.calls: list[tuple[str, str, str]] = []
        self.refuse = refuse or {}  # kind -> HTTP status to refuse its apply with

    async def apply(self, obj: dict) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(("apply", kind, name))
        if kind in self.refuse:
            err = ApiException(status=self.refuse[kind], reason="Invalid")
            err.body = json.dumps({"message": f"{kind} {name!r} is invalid: metadata.name"}).encode()
            raise err
        out = copy.deepcopy(obj)
        out["metadata"]["resourceVersion"] = str(next(VERSIONS))  # newer than any seen
        return out

    async def merge_patch(self, api_version, kind, namespace, name, patch) -> dict:
        self.calls.append(("patch", kind, name))
        return {}

    async def patch_status(self, api_version, kind, namespace, name, status) -> dict | None:
        self.calls.append(("status", kind, name))
        return None

    async def delete(self, api_version, kind, namespace, name) -> None:
        self.calls.append(("delete", kind, name))

    def writes(self, verb: str | None = None) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if verb is None or c[0] == verb]


VERSIONS = itertools.count(1)


def cr(kind: str, name: str, spec: dict, status: dict | None = None, generation: int = 1) -> dict:
    # Every object version is unique, as on a real API server (specs are parsed once per version).
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "generation": generation, "resourceVersion": str(next(VERSIONS))},
            "spec": spec, "status": status or {}}


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(Controller, "event",
                        staticmethod(lambda obj, type_, reason, message: seen.append((type_, reason))))
    return seen


def controller(kube: FakeKube, *objects: dict) -> Controller:
    ctl = Controller(kube, Settings(), workers=1)  # type: ignore[arg-type]
    for obj in objects:
        ctl.store.observe(obj["kind"], "ADDED", obj)
    return ctl


def run(coro):
    return asyncio.run(coro)


READY_DATASET = cr("Dataset", "digits", {"source": {"builtin": {"name": "digits"}}},
                   {"phase": "Ready"})
TJ_SPEC = {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"}, "backoffLimit": 2}


def failed_job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "resourceVersion": "1",
                         "labels": {"tauon.dev/trainingjob": "t", "app.kubernetes.io/managed-by": "tauon"},
                         "ownerReferences": [{"uid": "uid-t"}]},
            "spec": {}, "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}}


def test_a_restart_writes_status_before_it_deletes_the_failed_job(events):
    kube = FakeKube()
    tj = cr("TrainingJob", "t", TJ_SPEC, {"phase": "Running"})
    ctl = controller(kube, READY_DATASET, tj, failed_job("t-a0"))
    run(trainingjob.reconcile(ctl, NS, "t"))
    writes = [c for c in kube.calls if c[0] in ("status", "delete")]
    assert writes == [("status", "TrainingJob", "t"), ("delete", "Job", "t-a0")]
    assert not kube.writes("apply"), "the next attempt is built by the next reconcile"
    assert ("Warning", "WorkerFailed") in events


def test_the_next_attempt_prunes_a_left_over_job():
    """A crash between the status write and the delete leaves attempt 0's Job: the next
    reconcile (attempt 1) builds its own and removes the stale one."""
    kube = FakeKube()
    tj = cr("TrainingJob", "t", TJ_SPEC, {"phase": "Restarting", "restarts": 1})
    ctl = controller(kube, READY_DATASET, tj, failed_job("t-a0"))
    run(trainingjob.reconcile(ctl, NS, "t"))
    applied = [c for c in kube.writes("apply") if c[1] == "Job"]
    assert applied == [("apply", "Job", "t-a1")]
    assert kube.writes("delete") == [("delete", "Job", "t-a0")]
    assert kube.calls.index(applied[0]) < kube.calls.index(("delete", "Job", "t-a0"))


def test_nothing_is_written_when_nothing_changed():
    kube = FakeKube()
    ctl = controller(kube, READY_DATASET, cr("TrainingJob", "t", TJ_SPEC))
    run(trainingjob.reconcile(ctl, NS, "t"))
    first = len(kube.calls)
    tj = ctl.store.get("TrainingJob", NS, "t")
    # What the API server would now hold: the status just written.
    ctl.store.observe("TrainingJob", "MODIFIED", {
        **tj, "metadata": {**tj["metadata"], "resourceVersion": str(next(VERSIONS))},
        "status": {**tj["status"], **_last_status(ctl, kube)}})
    run(trainingjob.reconcile(ctl, NS, "t"))
    assert len(kube.calls) == first, kube.calls[first:]


def _last_status(ctl: Controller, kube: FakeKube) -> dict:
    from tauon_operator.status.trainingjob import trainingjob_plan

    tj = ctl.store.get("TrainingJob", NS, "t")
    plan = trainingjob_plan(tj, READY_DATASET, ctl.store.get("Job", NS, "t-a0"), [], utcnow(), "x")
    return plan.status.to_dict()


MD_SPEC = {"model": {"uri": "pvc://models/m", "sha256": "a" * 64}}


def md_children(spec: dict) -> tuple[Controller, FakeKube]:
    kube = FakeKube()
    ctl = controller(kube, cr("ModelDeployment", "web", spec))
    run(modeldeployment.reconcile(ctl, NS, "web"))
    return ctl, kube


def test_removing_autoscaling_prunes_the_hpa():
    ctl, kube = md_children({**MD_SPEC, "autoscaling": {"maxReplicas": 3}})
    assert ("apply", "HorizontalPodAutoscaler", "web") in kube.calls
    md = cr("ModelDeployment", "web", MD_SPEC, generation=2)
    ctl.store.observe("ModelDeployment", "MODIFIED", md)
    kube.calls.clear()
    run(modeldeployment.reconcile(ctl, NS, "web"))
    assert kube.writes("delete") == [("delete", "HorizontalPodAutoscaler", "web")]
    # the Deployment now carries replicas again, applied before the HPA goes
    assert kube.calls.index(("apply", "Deployment", "web")) < kube.calls.index(kube.writes("delete")[0])


def test_removing_the_canary_prunes_its_deployment_and_config_and_clears_its_status():
    canary = {**MD_SPEC, "replicas": 2,
              "canary": {"model": {"uri": "pvc://models/c", "sha256": "b" * 64}, "trafficPercent": 50}}
    ctl, kube = md_children(canary)
    assert ("apply", "Deployment", "web-canary") in kube.calls
    md = cr("ModelDeployment", "web", {**MD_SPEC, "replicas": 2}, {"canary": {"trafficPercent": 50}},
            generation=2)
    ctl.store.observe("ModelDeployment", "MODIFIED", md)
    kube.calls.clear()
    patches: list[dict] = []
    original = kube.patch_status

    async def record(api_version, kind, namespace, name, status):
        patches.append(status)
        return await original(api_version, kind, namespace, name, status)

    kube.patch_status = record  # type: ignore[method-assign]
    run(modeldeployment.reconcile(ctl, NS, "web"))
    assert sorted(kube.writes("delete")) == [("delete", "ConfigMap", "web-canary-serving"),
                                             ("delete", "Deployment", "web-canary")]
    assert patches and patches[-1]["canary"] is None


def test_an_unresolvable_canary_model_is_not_a_reason_to_delete_the_canary():
    """A TrainingJob missing from the cache (after a restart, say) keeps the canary serving."""
    ref = {**MD_SPEC, "replicas": 2,
           "canary": {"model": {"trainingJobRef": {"name": "later"}}, "trafficPercent": 50}}
    kube = FakeKube()
    ctl = controller(kube, cr("ModelDeployment", "web", ref))
    for kind, name in (("Deployment", "web-canary"), ("ConfigMap", "web-canary-serving")):
        ctl.store.observe(kind, "ADDED", {"kind": kind, "metadata": {
            "name": name, "namespace": NS, "labels": {"tauon.dev/modeldeployment": "web"},
            "ownerReferences": [{"uid": "uid-web"}]}, "spec": {}})
    run(modeldeployment.reconcile(ctl, NS, "web"))
    assert not kube.writes("delete")


def test_children_of_another_owner_are_never_pruned():
    kube = FakeKube()
    ctl = controller(kube, cr("ModelDeployment", "web", MD_SPEC))
    ctl.store.observe("HorizontalPodAutoscaler", "ADDED", {"kind": "HorizontalPodAutoscaler", "metadata": {
        "name": "theirs", "namespace": NS, "labels": {"tauon.dev/modeldeployment": "web"},
        "ownerReferences": [{"uid": "someone-else"}]}, "spec": {}})
    run(modeldeployment.reconcile(ctl, NS, "web"))
    assert not kube.writes("delete")


def test_a_child_the_api_server_refuses_stalls_the_parent_once(events):
    kube = FakeKube(refuse={"Job": 422})
    ctl = controller(kube, READY_DATASET, cr("TrainingJob", "t", TJ_SPEC))
    run(trainingjob.reconcile(ctl, NS, "t"))  # returns normally: no retry loop
    assert ("status", "TrainingJob", "t") in kube.calls
    assert events == [("Warning", "InvalidSpec")]


def test_dataset_children_are_applied_once():
    kube = FakeKube()
    ctl = controller(kube, cr("Dataset", "d", {"source": {"builtin": {"name": "digits"}}}))
    run(dataset.reconcile(ctl, NS, "d"))
    applied = {c[1] for c in kube.writes("apply")}
    assert {"Job", "ConfigMap", "PersistentVolumeClaim"} <= applied
    kube.calls.clear()
    run(dataset.reconcile(ctl, NS, "d"))  # the cache now holds what was applied
    assert not kube.writes("apply")


@pytest.mark.parametrize("failures, seconds", [(1, 0.5), (2, 1.0), (3, 2.0), (10, 256.0), (11, 300.0), (50, 300.0)])
def test_backoff_is_exponential_per_key_and_bounded(failures, seconds):
    assert backoff(failures) == seconds


def test_a_failing_key_backs_off_and_a_success_resets_it():
    async def scenario() -> list[float]:
        kube = FakeKube()
        ctl = Controller(kube, Settings(), workers=1)  # type: ignore[arg-type]
        attempts: list[float] = []
        loop = asyncio.get_running_loop()

        async def flaky(_ctl, ns, name):
            attempts.append(loop.time())
            if len(attempts) < 3:
                raise ApiException(status=500, reason="boom")

        ctl.reconcilers["X"] = flaky
        ctl.enqueue("X", NS, "a")
        while len(attempts) < 3:
            await asyncio.sleep(0.05)
        await ctl.drain()
        assert ("X", NS, "a") not in ctl._failures
        return [b - a for a, b in zip(attempts, attempts[1:])]

    gaps = run(scenario())
    assert 0.45 <= gaps[0] < 0.9 and 0.95 <= gaps[1] < 1.6


def _edited(ctl: Controller, kind: str, name: str, edit) -> None:
    """Someone else's write, as the watch would deliver it."""
    obj = copy.deepcopy(ctl.store.get(kind, NS, name))
    edit(obj)
    obj["metadata"]["resourceVersion"] = str(next(VERSIONS))
    ctl.store.observe(kind, "MODIFIED", obj)


def test_an_owned_field_someone_changed_is_applied_back():
    ctl, kube = md_children({**MD_SPEC, "replicas": 2})
    container = lambda d: d["spec"]["template"]["spec"]["containers"][0]  # noqa: E731
    _edited(ctl, "Deployment", "web", lambda d: container(d).update(image="evil.example/x:1"))
    kube.calls.clear()
    run(modeldeployment.reconcile(ctl, NS, "web"))
    assert kube.writes("apply") == [("apply", "Deployment", "web")]
    assert container(ctl.store.get("Deployment", NS, "web"))["image"] != "evil.example/x:1"


def test_fields_the_operator_does_not_set_are_not_drift():
    ctl, kube = md_children({**MD_SPEC, "replicas": 2})

    def defaulted(d):
        d["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        d["spec"]["progressDeadlineSeconds"] = 600
        d["status"] = {"readyReplicas": 2}

    _edited(ctl, "Deployment", "web", defaulted)
    kube.calls.clear()
    run(modeldeployment.reconcile(ctl, NS, "web"))
    assert not kube.writes("apply")


def _running(ctl: Controller, workers: int) -> None:
    """The worker Job and its pods as the cluster holds them once attempt 0 runs."""
    job = next(c for c in _built_children(ctl) if c["kind"] == "Job")
    job["metadata"]["resourceVersion"] = str(next(VERSIONS))
    job["status"] = {"active": workers}
    ctl.store.observe("Job", "ADDED", job)
    for i in range(workers):
        ctl.store.observe("Pod", "ADDED", {"kind": "Pod", "metadata": {
            "name": f"t-a0-{i}", "namespace": NS, "resourceVersion": str(next(VERSIONS)),
            "labels": {"tauon.dev/trainingjob": "t", "tauon.dev/attempt": "0"}},
            "status": {"phase": "Running"}})


def _built_children(ctl: Controller) -> list[dict]:
    from tauon_operator.builders import trainingjob as build

    return copy.deepcopy(build.build(ctl.store.get("TrainingJob", NS, "t"), ctl.settings, 0))


def _status_written(kube: FakeKube) -> list[dict]:
    patches: list[dict] = []
    original = kube.patch_status

    async def record(api_version, kind, namespace, name, status):
        patches.append(status)
        return await original(api_version, kind, namespace, name, status)

    kube.patch_status = record  # type: ignore[method-assign]
    return patches


def test_a_running_attempt_outlives_its_deleted_dataset():
    kube = FakeKube()
    ctl = controller(kube, READY_DATASET, cr("TrainingJob", "t", TJ_SPEC, {"phase": "Running"}))
    _running(ctl, 1)
    ctl.store.observe("Dataset", "DELETED", READY_DATASET)
    patches = _status_written(kube)
    run(trainingjob.reconcile(ctl, NS, "t"))
    assert not patches or patches[-1].get("phase", "Running") == "Running", patches


def test_more_workers_while_running_is_a_condition_not_a_lie():
    kube = FakeKube()
    ctl = controller(kube, READY_DATASET, cr("TrainingJob", "t", TJ_SPEC, {"phase": "Running"}))
    _running(ctl, 1)
    ctl.store.observe("TrainingJob", "MODIFIED",
                      cr("TrainingJob", "t", {**TJ_SPEC, "workers": 2}, {"phase": "Running"},
                         generation=2))
    patches = _status_written(kube)
    run(trainingjob.reconcile(ctl, NS, "t"))
    status = patches[-1]
    assert status.get("phase", "Running") == "Running"
    cond = next(x for x in status["conditions"] if x["type"] == "SpecApplied")
    assert (cond["status"], cond["reason"]) == ("False", "SpecChangeNotApplied")
    assert "workers" in cond["message"] and "attempt 0" in cond["message"]
    assert ("apply", "Job", "t-a0") not in kube.calls, "a running Job's template is never re-applied"


FEEDBACK_DATASET = {"source": {"feedback": {"modelDeploymentRef": {"name": "web"},
                                            "baseDatasetRef": {"name": "digits"}}}}
STORE = Settings(store_endpoint="http://127.0.0.1:8333", store_bucket="models", store_secret="s")


class StatusKube(FakeKube):
    """Keeps the last status written per object."""

    def __init__(self):
        super().__init__()
        self.status: dict[str, dict] = {}

    async def patch_status(self, api_version, kind, namespace, name, status) -> dict | None:
        self.status[name] = status
        return await super().patch_status(api_version, kind, namespace, name, status)


@pytest.mark.parametrize("settings, base, phase, reason, builds", [
    (Settings(), READY_DATASET, "Failed", "StoreRequired", False),
    (STORE, None, "Pending", "BaseDatasetNotFound", False),
    (STORE, cr("Dataset", "digits", {"source": {"builtin": {"name": "digits"}}}, {"phase": "Preparing"}),
     "Pending", "WaitingForBaseDataset", False),
    (STORE, cr("Dataset", "digits", {"source": {"builtin": {"name": "digits"}}},
               {"phase": "Ready", "digest": "sha256:" + "d" * 64,
                "location": "s3://models/tauon/ml/datasets/digits/" + "d" * 64 + "/"}),
     "Pending", "Creating", True),
])
def test_a_feedback_dataset_waits_for_its_base_version_and_says_why(settings, base, phase, reason, builds,
                                                                   events):
    kube = StatusKube()
    ctl = Controller(kube, settings, workers=1)  # type: ignore[arg-type]
    for obj in [cr("Dataset", "fb", FEEDBACK_DATASET), *([base] if base else [])]:
        ctl.store.observe(obj["kind"], "ADDED", obj)
    run(dataset.reconcile(ctl, NS, "fb"))
    st = kube.status["fb"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (st["phase"], ready["reason"]) == (phase, reason)
    configs = [c for c in kube.writes("apply") if c[1] == "ConfigMap"]
    assert bool(configs) == builds
