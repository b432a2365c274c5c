"""What a TrainingJob in a Kueue queue says about Kueue's decision, read from its Job and the
Workload Kueue made for it: a table of the states Kueue's batch/Job integration goes through."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tauon_operator import queueing
from tauon_operator.builders import pod, trainingjob
from tauon_operator.settings import Settings
from tauon_operator.status.trainingjob import trainingjob_plan

QUEUED = {queueing.QUEUE_LABEL: "gpus"}
NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)


def job(suspend: bool, labels=QUEUED) -> dict:
    return {"metadata": {"name": "t-a0", "namespace": "ml", "uid": "u1", "labels": dict(labels)},
            "spec": {"suspend": suspend}, "status": {"active": 0 if suspend else 2}}


def workload(*conditions: tuple[str, str, str, str], cq: str | None = None) -> dict:
    st: dict = {"conditions": [{"type": t, "status": s, "reason": r, "message": m}
                               for t, s, r, m in conditions]}
    if cq:
        st["admission"] = {"clusterQueue": cq}
    return {"metadata": {"name": "job-t-a0-1"}, "status": st}


PENDING = ("QuotaReserved", "False", "Pending",
           "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu")
RESERVED = ("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue gpus")
PREEMPTED = ("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: x)")
EVICTED_PREEMPTED = ("Evicted", "True", "Preempted", "Preempted to accommodate a workload")
EVICTED_OTHER = ("Evicted", "True", "InactiveWorkload", "The workload is deactivated")


@pytest.mark.parametrize("the_job,the_workload,state,words", [
    (job(True), None, "Queued", "no Workload yet"),
    (job(True), workload(PENDING), "Queued", "insufficient unused quota for nvidia.com/gpu"),
    (job(True), workload(), "Queued", "waiting in queue gpus"),
    (job(False), workload(RESERVED, ("Admitted", "True", "Admitted", ""), cq="gpus"),
     "Admitted", "ClusterQueue gpus"),
    (job(False), None, "Admitted", "queue gpus"),  # the Workload lags its Job by a moment
    (job(True), workload(PREEMPTED, EVICTED_PREEMPTED, PENDING), "Preempted",
     "resumes from the latest checkpoint"),
    (job(True), workload(EVICTED_PREEMPTED), "Preempted", "Preempted to accommodate"),
    (job(True), workload(EVICTED_OTHER), "Queued", "deactivated"),
])
def test_admission(the_job, the_workload, state, words):
    got = queueing.admission(the_job, the_workload)
    assert got.state == state
    assert words in got.message


def tj(**spec) -> dict:
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "t", "namespace": "ml", "uid": "uid-t", "generation": 1,
                         "labels": {**QUEUED, "kueue.x-k8s.io/priority-class": "high",
                                    "team": "vision"}},
            "spec": {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"}, "workers": 2,
                     "backoffLimit": 2, **spec},
            "status": {}}


READY_DS = {"status": {"phase": "Ready"}}


@pytest.mark.parametrize("the_job,the_workload,phase,reason,admitted", [
    (job(True), workload(PENDING), "Queued", "Queued", "False"),
    (job(True), workload(PREEMPTED, EVICTED_PREEMPTED), "Queued", "Preempted", "False"),
    (job(False), workload(RESERVED, cq="gpus"), "Pending", "StartingWorkers", "True"),
])
def test_a_queued_runs_status_says_what_kueue_decided(the_job, the_workload, phase, reason, admitted):
    plan = trainingjob_plan(tj(), READY_DS, the_job, [], NOW, "pvc://t-output/model",
                            the_workload)
    status = plan.status.to_dict()
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == phase
    assert conds["Ready"]["reason"] == reason
    assert conds["Admitted"]["status"] == admitted
    assert plan.apply_children and not plan.restart
    if reason == "Preempted":
        assert [e[1] for e in plan.events] == ["Preempted"]


def test_a_queued_job_starts_suspended_with_the_queue_on_the_job_not_the_pods():
    kids = {c["kind"]: c for c in trainingjob.build(tj(), Settings(), "d-data", 0)}
    job_ = kids["Job"]
    assert job_["spec"]["suspend"] is True
    assert job_["metadata"]["labels"][queueing.QUEUE_LABEL] == "gpus"
    assert job_["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    assert queueing.QUEUE_LABEL not in job_["spec"]["template"]["metadata"]["labels"]
    assert "team" not in job_["metadata"]["labels"]  # only Kueue's labels are passed on


def test_the_operator_never_touches_suspend_on_a_queued_job():
    desired = {"metadata": {"labels": QUEUED}, "spec": {"suspend": True}}
    assert pod.update_job(desired, {"metadata": {"labels": QUEUED}, "spec": {"suspend": False}}) is None
    mine = {"metadata": {"labels": {}}, "spec": {"suspend": True}}
    assert pod.update_job(mine, {"metadata": {}, "spec": {"suspend": False}}) == {
        "spec": {"suspend": True}}


def test_a_queued_run_suspended_by_its_user_gives_its_quota_back():
    kids = trainingjob.build(tj(suspend=True), Settings(), "d-data", 0)
    assert "Job" not in {c["kind"] for c in kids}
    plan = trainingjob_plan(tj(suspend=True), READY_DS, None, [], NOW, "pvc://t-output/model")
    assert plan.status.to_dict()["phase"] == "Suspended"


def test_without_a_queue_label_nothing_changes():
    plain = tj()
    plain["metadata"]["labels"] = {}
    job_ = next(c for c in trainingjob.build(plain, Settings(), "d-data", 0) if c["kind"] == "Job")
    assert job_["spec"]["suspend"] is False
    assert not any(k.startswith("kueue.x-k8s.io") for k in job_["metadata"]["labels"])


GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
POOL = {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}


def test_placement_passes_the_spec_through_after_the_charts_gpu_tolerations():
    settings = Settings(gpu_tolerations=(GPU_TAINT,))
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "gpu", "operator": "In", "values": ["a100"]}]}]}}}
    spec = tj(tolerations=[POOL], nodeSelector={"pool": "a100"}, affinity=affinity,
              priorityClassName="research", resources={"gpus": 8})
    job_ = next(c for c in trainingjob.build(spec, settings, "d-data", 0) if c["kind"] == "Job")
    pod_spec = job_["spec"]["template"]["spec"]
    assert pod_spec["tolerations"] == [GPU_TAINT, POOL]
    assert pod_spec["nodeSelector"] == {"pool": "a100"}
    assert pod_spec["affinity"] == affinity
    assert pod_spec["priorityClassName"] == "research"
    cpu_only = next(c for c in trainingjob.build(tj(), settings, "d-data", 0) if c["kind"] == "Job")
    assert "tolerations" not in cpu_only["spec"]["template"]["spec"]  # no GPUs: no GPU toleration


def test_the_charts_gpu_tolerations_come_from_the_environment():
    import json

    got = Settings.from_env({"TAUON_GPU_TOLERATIONS": json.dumps([GPU_TAINT])})
    assert got.gpu_tolerations == (GPU_TAINT,)
    with pytest.raises(ValueError, match="TAUON_GPU_TOLERATIONS"):
        Settings.from_env({"TAUON_GPU_TOLERATIONS": '{"key": "x"}'})


def test_the_taints_a_refused_pod_does_not_tolerate_are_named():
    from tauon_operator.status import observe

    def node(name, labels, *taints):
        return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": list(taints)}}

    pool = {"key": "pool", "value": "a100", "effect": "NoSchedule"}
    gpu = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    soft = {"key": "spot", "effect": "PreferNoSchedule"}
    nodes = [node("a", {"pool": "a100"}, pool, gpu, soft), node("b", {"pool": "h100"}, pool)]
    refused = {"metadata": {"name": "w-0"}, "spec": {"nodeSelector": {"pool": "a100"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
               "status": {"conditions": [{"type": "PodScheduled", "status": "False",
                                          "reason": "Unschedulable",
                                          "message": "1 node(s) had untolerated taint(s)"}]}}
    assert observe.untolerated_taints(refused, nodes) == ["pool=a100:NoSchedule"]
    tolerant = {"spec": {"tolerations": [{"operator": "Exists"}]}}
    assert observe.untolerated_taints(tolerant, nodes) == []
    [named] = observe.naming_taints([refused], ["pool=a100:NoSchedule"])
    assert observe.scheduling_problem([named])[1].endswith("(untolerated: pool=a100:NoSchedule)")
