"""Status rules are pure: observed objects in, status (and the next step) out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tauon_operator.conditions import Cond, merge
from tauon_operator.status.dataset import dataset_status
from tauon_operator.status.modeldeployment import model_problem, modeldeployment_status
from tauon_operator.status.trainingjob import trainingjob_plan

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
STAMP = "2026-11-29T12:00:00Z"


def cond(status, type_: str) -> dict:
    return next(c for c in dump(status)["conditions"] if c["type"] == type_)


def dump(status) -> dict:
    """The status as the API server stores it (camelCase JSON)."""
    return status if isinstance(status, dict) else status.to_dict()


def job(*conditions: str, active=0, succeeded=0, failed=0, reason=None, suspend=False) -> dict:
    return {"metadata": {"name": "j"}, "spec": {"suspend": suspend},
            "status": {"active": active, "succeeded": succeeded, "failed": failed,
                       "conditions": [{"type": t, "status": "True", "reason": reason} for t in conditions]}}


def pod(phase="Running", exit_code=None, message=None, unschedulable=None, waiting=None) -> dict:
    st: dict = {"phase": phase, "conditions": [], "containerStatuses": []}
    if unschedulable:
        st["conditions"].append({"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable", "message": unschedulable})
    if exit_code is not None:
        st["containerStatuses"].append({"state": {"terminated": {"exitCode": exit_code,
                                                                 **({"message": message} if message else {})}}})
    if waiting:
        st["containerStatuses"].append({"image": "img", "state": {"waiting": {"reason": waiting}}})
    return {"metadata": {"name": "p"}, "status": st}


# ---------------------------------------------------------------- conditions

def test_transition_time_moves_only_when_the_status_does():
    t1, t2, t3 = (NOW + timedelta(seconds=i) for i in range(3))
    first = [c.to_dict() for c in merge(None, [Cond("Ready", False, "A")], 1, t1)]
    same = [c.to_dict() for c in merge(first, [Cond("Ready", False, "B", "other reason")], 2, t2)]
    flipped = [c.to_dict() for c in merge(same, [Cond("Ready", True, "C")], 2, t3)]
    assert first[0]["lastTransitionTime"] == same[0]["lastTransitionTime"] == "2026-11-29T12:00:00Z"
    assert same[0]["reason"] == "B" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-11-29T12:00:02Z"


# ---------------------------------------------------------------- Dataset

DS = {"metadata": {"name": "d", "generation": 3}, "spec": {}}


@pytest.mark.parametrize("the_job,pods,phase,ready,reason", [
    (None, [], "Pending", "False", "Creating"),
    (job(active=1), [pod()], "Preparing", "False", "Preparing"),
    (job("Complete", succeeded=1), [pod("Succeeded", 0, json.dumps(
        {"result": "succeeded", "digest": "sha256:ab", "counts": {"train": 8, "validation": 1, "test": 1}}))],
     "Ready", "True", "Prepared"),
    (job("Failed", failed=1), [pod("Failed", 1, json.dumps(
        {"error": "ChecksumMismatch", "message": "sha256 expected 00 got ff"}))],
     "Failed", "False", "ChecksumMismatch"),
    (job("Failed", failed=1, reason="BackoffLimitExceeded"), [], "Failed", "False", "BackoffLimitExceeded"),
    (job(active=1), [pod("Pending", unschedulable="0/4 nodes")], "Preparing", "False", "Unschedulable"),
])
def test_dataset_status(the_job, pods, phase, ready, reason):
    s = dump(dataset_status(DS, "d-data", the_job, pods, NOW))
    assert (s["phase"], cond(s, "Ready")["status"], cond(s, "Ready")["reason"]) == (phase, ready, reason)
    assert s["observedGeneration"] == 3 and s["claimName"] == "d-data"
    if phase == "Ready":
        assert s["digest"] == "sha256:ab"
        assert s["counts"]["total"] == 10
        assert "10 samples" in cond(s, "Ready")["message"]
    if phase == "Failed":
        assert cond(s, "Stalled")["status"] == "True" and cond(s, "Failed")["status"] == "True"


# ---------------------------------------------------------------- TrainingJob

def tj(status=None, **spec) -> dict:
    return {"metadata": {"name": "t", "generation": 1},
            "spec": {"datasetRef": {"name": "d"}, "workers": 1, "backoffLimit": 2, **spec},
            "status": status or {}}


READY_DS = {"status": {"phase": "Ready"}}


@pytest.mark.parametrize("the_tj,ds,the_job,pods,phase,reason,apply,restart", [
    (tj(), None, None, [], "Pending", "DatasetNotFound", False, False),
    (tj(), {"status": {"phase": "Failed"}}, None, [], "Pending", "DatasetFailed", False, False),
    (tj(), {"status": {"phase": "Preparing"}}, None, [], "Pending", "WaitingForDataset", False, False),
    (tj(), READY_DS, None, [], "Pending", "Creating", True, False),
    (tj(), READY_DS, job(active=1), [pod()], "Running", "Training", True, False),
    (tj(suspend=True), READY_DS, job(suspend=True), [], "Suspended", "Suspended", True, False),
    (tj(), READY_DS, job(active=1), [pod("Pending", unschedulable="Insufficient nvidia.com/gpu")],
     "Pending", "Unschedulable", True, False),
    (tj(), READY_DS, job(active=1), [pod("Pending", waiting="ImagePullBackOff")],
     "Pending", "ImagePullBackOff", True, False),
    (tj(), READY_DS, job("Complete", succeeded=1), [pod("Succeeded", 0)], "Succeeded", "Succeeded", False, False),
    (tj(), READY_DS, job("Failed", failed=1), [pod("Failed", 1)], "Restarting", "WorkerFailed", False, True),
    (tj({"restarts": 2}), READY_DS, job("Failed", failed=1), [pod("Failed", 1)],
     "Failed", "BackoffLimitExceeded", False, False),
    (tj(), READY_DS, job("Failed", failed=1), [pod("Failed", 3, json.dumps({"message": "0.5 < 0.9"}))],
     "Failed", "BelowEvaluationGate", False, False),
    (tj(), READY_DS, job("Failed", failed=1), [pod("Failed", 2)], "Failed", "InvalidConfig", False, False),
    (tj(), READY_DS, job("Failed", reason="DeadlineExceeded"), [], "Failed", "DeadlineExceeded", False, False),
    (tj({"phase": "Succeeded", "conditions": []}), READY_DS, None, [], "Succeeded", None, False, False),
])
def test_trainingjob_plan(the_tj, ds, the_job, pods, phase, reason, apply, restart):
    plan = trainingjob_plan(the_tj, ds, the_job, pods, NOW, "pvc://t-output/model")
    assert dump(plan.status)["phase"] == phase
    if reason:
        assert cond(plan.status, "Ready")["reason"] == reason
    assert (plan.apply_children, plan.restart) == (apply, restart)
    if restart:
        assert dump(plan.status)["restarts"] == 1
    if phase == "Failed" and reason:
        assert cond(plan.status, "Failed")["status"] == "True"
        assert cond(plan.status, "Stalled")["status"] == "True"


def test_success_records_the_model_from_the_termination_message():
    result = {"model": {"location": "/output/model", "sha256": "f" * 64, "metrics": {"accuracy": 0.97}}}
    plan = trainingjob_plan(tj(), READY_DS, job("Complete", succeeded=1),
                            [pod("Succeeded", 0, json.dumps(result))], NOW, "pvc://t-output/model")
    assert dump(plan.status)["model"] == {"location": "pvc://t-output/model", "sha256": "f" * 64,
                                          "metrics": {"accuracy": 0.97}}
    assert "0.9700" in cond(plan.status, "Ready")["message"]


def test_the_deadline_counts_from_the_first_start():
    started = (NOW - timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plan = trainingjob_plan(tj({"startTime": started}, activeDeadlineSeconds=60), READY_DS,
                            job(active=1), [pod()], NOW, "x")
    assert dump(plan.status)["phase"] == "Failed" and plan.stop
    assert cond(plan.status, "Failed")["reason"] == "DeadlineExceeded"


# ---------------------------------------------------------------- ModelDeployment

@pytest.mark.parametrize("tj_obj,reason,stalled", [
    (None, "TrainingJobNotFound", True),
    ({"status": {"phase": "Running"}}, "WaitingForModel", False),
    ({"status": {"phase": "Failed", "conditions": [{"type": "Failed", "reason": "BelowEvaluationGate"}]}},
     "TrainingJobFailed", True),
    ({"status": {"phase": "Succeeded"}}, "NoModel", True),
])
def test_model_problems(tj_obj, reason, stalled):
    r, _, s = model_problem("t", tj_obj)
    assert (r, s) == (reason, stalled)


def deployment(digest: str, ready: int, updated: int, replicas: int, generation=1) -> dict:
    return {"metadata": {"generation": generation},
            "spec": {"template": {"metadata": {"annotations": {"tauon.dev/model-digest": digest}}}},
            "status": {"observedGeneration": generation, "readyReplicas": ready, "updatedReplicas": updated,
                       "availableReplicas": ready, "replicas": replicas}}


MD = {"metadata": {"generation": 1}, "spec": {}, "status": {"modelDigest": "old"}}


@pytest.mark.parametrize("dep,phase,digest", [
    (deployment("new", 2, 2, 2), "Ready", "new"),
    (deployment("new", 2, 1, 3), "Progressing", "old"),  # an old pod still serves
    (deployment("old", 2, 2, 2), "Progressing", "old"),  # template not updated yet
    (None, "Progressing", "old"),
])
def test_modeldeployment_ready_only_when_every_replica_serves_the_digest(dep, phase, digest):
    s = dump(modeldeployment_status(MD, "http://x", (2, 0), "new", None, dep, None, None, NOW))
    assert s["phase"] == phase
    assert s["modelDigest"] == digest
    assert cond(s, "Ready")["status"] == ("True" if phase == "Ready" else "False")


# ---------------------------------------------------------------- status that tells the truth

def test_the_accuracy_column_is_the_exported_models_test_accuracy():
    from tauon_operator.api import TrainingJob

    columns = {c.name: c for c in TrainingJob.PRINTER_COLUMNS}
    assert columns["Accuracy"].json_path == ".status.model.metrics.accuracy"
    assert "Test" in columns["Accuracy"].description
    assert columns["Val-Accuracy"].json_path == ".status.metrics.latest.accuracy"


def test_an_early_stopped_run_that_succeeded_reads_complete():
    prev = {"phase": "Running", "progress": {"epoch": 4, "totalEpochs": 100, "percent": 4.0,
                                             "etaSeconds": 900}}
    plan = trainingjob_plan(tj(prev), READY_DS, job("Complete", succeeded=1), [pod("Succeeded", 0)],
                            NOW, "x")
    progress = dump(plan.status)["progress"]
    assert (progress["percent"], progress["etaSeconds"], progress["epoch"]) == (100, 0, 4)


def test_editing_a_finished_run_says_the_change_is_not_applied():
    finished = {"phase": "Succeeded", "model": {"sha256": "f" * 64},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                "message": "", "lastTransitionTime": STAMP, "observedGeneration": 1}]}
    edited = {**tj(finished), "metadata": {"name": "t", "generation": 2}}
    s = dump(trainingjob_plan(edited, READY_DS, None, [], NOW, "x").status)
    assert s["phase"] == "Succeeded" and s["observedGeneration"] == 2
    applied = cond(s, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", "SpecChangeNotApplied")
    assert "generation 1" in applied["message"] and s["model"]["sha256"] == "f" * 64
    unedited = dump(trainingjob_plan(tj(finished), READY_DS, None, [], NOW, "x").status)
    assert all(c["type"] != "SpecApplied" for c in unedited["conditions"])


def test_a_worker_that_exited_before_its_job_completes_keeps_the_run_running():
    """Phases move forward only: Running never falls back to Pending/StartingWorkers."""
    plan = trainingjob_plan(tj({"phase": "Running"}), READY_DS, job(active=0, succeeded=1),
                            [pod("Succeeded", 0)], NOW, "x")
    assert dump(plan.status)["phase"] == "Running"


def test_a_serving_pod_refusing_its_weights_fails_the_deployment():
    refused = {"metadata": {"name": "web-1"}, "status": {"containerStatuses": [{
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 3, "message": json.dumps(
            {"message": "model.safetensors has sha256 ab..., expected cd..."})}}}]}}
    s = dump(modeldeployment_status(MD, "http://x", (1, 0), "new", None,
                                    deployment("new", 0, 1, 1), None, None, NOW, [refused]))
    assert s["phase"] == "Failed"
    assert (cond(s, "Ready")["reason"], cond(s, "Stalled")["status"]) == ("ModelRefused", "True")
    assert "expected cd" in cond(s, "Ready")["message"]


def initializing(state: dict, last: dict | None = None, name: str = "web-7f9c") -> dict:
    init = {"name": "storage-initializer", "state": state, "lastState": last or {}}
    return {"metadata": {"name": name}, "status": {"phase": "Pending",
            "initContainerStatuses": [init],
            "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "PodInitializing"}}}]}}


def fetch_failed(error: str, message: str) -> dict:
    return {"terminated": {"exitCode": 3 if error != "StoreUnavailable" else 1,
                           "message": json.dumps({"error": error, "message": message})}}


@pytest.mark.parametrize("pod_,phase,reason,stalled", [
    # the object is not what the manifest vouches for: no retry can fix it
    (initializing({"waiting": {"reason": "CrashLoopBackOff"}},
                  fetch_failed("ChecksumMismatch", "model.safetensors: sha256 12ab does not match")),
     "Failed", "ChecksumMismatch", "True"),
    (initializing(fetch_failed("ModelNotPublished", "no manifest.json")),
     "Failed", "ModelNotPublished", "True"),
    # an unreachable store may come back: Degraded, still reconciling
    (initializing({"running": {}}, fetch_failed("StoreUnavailable", "connection refused")),
     "Degraded", "StoreUnavailable", "False"),
    # the kubelet cannot create the container: the credentials Secret is missing
    (initializing({"waiting": {"reason": "CreateContainerConfigError",
                               "message": 'secret "tauon-store" not found'}}),
     "Degraded", "CreateContainerConfigError", "False"),
])
def test_a_model_that_cannot_be_fetched_says_why_at_once(pod_, phase, reason, stalled):
    s = dump(modeldeployment_status(MD, "http://x", (1, 0), "new", None,
                                    deployment("new", 0, 1, 1), None, None, NOW, [pod_]))
    assert s["phase"] == phase
    ready = cond(s, "Ready")
    assert (ready["status"], ready["reason"], cond(s, "Stalled")["status"]) == ("False", reason, stalled)
    assert ready["message"].startswith("pod web-7f9c: storage-initializer: ")


def test_a_fetch_that_succeeded_after_a_failure_is_not_a_problem():
    recovered = initializing({"terminated": {"exitCode": 0}},
                             fetch_failed("StoreUnavailable", "connection refused"))
    s = dump(modeldeployment_status(MD, "http://x", (1, 0), "new", None,
                                    deployment("new", 1, 1, 1), None, None, NOW, [recovered]))
    assert s["phase"] == "Ready"


def test_a_prepare_pod_without_the_store_secret_says_which_one():
    waiting = {"metadata": {"name": "d-prepare-x"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "prepare", "state": {"waiting": {"reason": "CreateContainerConfigError",
                                                  "message": 'secret "tauon-store" not found'}}}]}}
    s = dump(dataset_status(DS, "d-data", job(active=1), [waiting], NOW))
    ready = cond(s, "Ready")
    assert (ready["reason"], ready["message"]) == (
        "CreateContainerConfigError", 'pod d-prepare-x: prepare: secret "tauon-store" not found')


def test_the_measured_canary_share_counts_relayed_and_locally_served_predictions():
    from tauon_operator.serving import split_counts
    from tauon_runtime.serve.metrics import ServeMetrics

    m = ServeMetrics()
    m.canary_forwarded.labels("ok").inc(20)
    m.canary_forwarded.labels("fallback").inc(3)  # served here: counted below as well
    m.requests.labels("/v1/predict", "POST", "200").inc(50)
    m.requests.labels("/v2/models/{name}/infer", "POST", "200").inc(27)
    m.requests.labels("/v1/feedback", "POST", "201").inc(9)  # not a prediction
    m.requests.labels("/v2/health/ready", "GET", "200").inc(100)
    assert split_counts(m.exposition().decode()) == (20, 77)
