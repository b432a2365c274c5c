"""Kueue shares GPU quota between TrainingJobs: a real Kueue (v0.17.0, built from the Go module
proxy) on the real control plane, a ClusterQueue of 16 GPUs, kwok GPU nodes for the runs whose
pods only need to be placed, and the node agent for the run that really trains and is
preempted. The operator runs as its own process with exactly the chart's RBAC."""

from __future__ import annotations

import json

import pytest

import localplatform
from kubetest import condition, finish_pods, get_json, new_namespace, status_of, wait_for, wait_phase
from localkube.kueue import local_queue, queue_objects
from localplatform import SIMULATED_TAINT
from operator_rbac import chart_rbac_kubeconfig

pytestmark = pytest.mark.cluster
NS = "research"
QUEUE = "gpus"
GROUP = "tauon.dev/v1alpha1"
# Placement on the kwok GPU nodes (tainted: the platform keeps them for what only needs placing).
ON_KWOK = {"tolerations": [{**SIMULATED_TAINT, "operator": "Equal"}],
           "nodeSelector": {"type": "kwok"}}
ON_AGENT = {"nodeSelector": {"tauon.dev/node-agent": "true"}}


@pytest.fixture(scope="module")
def plane():
    cluster = localplatform.start(gpu_nodes=2, operator=False, object_store=False, agent_gpus=8,
                                  kueue=True)
    try:
        new_namespace(cluster, NS)
        cluster.apply(*queue_objects(QUEUE, gpus=16))
        cluster.apply(local_queue(QUEUE, NS, QUEUE))
        cluster.apply(*({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                         "metadata": {"name": name}, "value": value}
                        for name, value in (("low", 100), ("medium", 500), ("high", 1000))))
        localplatform.start_operator(cluster, chart_rbac_kubeconfig(cluster))
        cluster.apply({"apiVersion": GROUP, "kind": "Dataset", "metadata": {"name": "digits"},
                       "spec": {"source": {"builtin": {"name": "digits"}}}}, namespace=NS)
        wait_phase(cluster, "tds", "digits", NS, "Ready", timeout=300)
        yield cluster
    finally:
        cluster.stop()


def trainingjob(name: str, queue: str | None = QUEUE, gpus: int = 4, workers: int = 2,
                epochs: int = 2, priority: str | None = None, **spec) -> dict:
    return {
        "apiVersion": GROUP, "kind": "TrainingJob",
        "metadata": {"name": name, **({"labels": {"kueue.x-k8s.io/queue-name": queue}}
                                      if queue else {})},
        "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"},
                 "workers": workers,
                 "hyperparameters": {"epochs": epochs, "batchSize": 32},
                 "resources": {"gpus": gpus, "cpu": "500m", "memory": "1Gi"},
                 **({"priorityClassName": priority} if priority else {}), **spec},
    }


def workers(plane, name: str) -> list[dict]:
    return get_json(plane, "pods", "-n", NS, "-l", f"tauon.dev/trainingjob={name}")["items"]


def admitted(plane, name: str) -> dict:
    return condition(status_of(plane, "tj", name, NS), "Admitted")


def test_three_8_gpu_runs_on_16_gpus_of_quota_two_run_and_the_third_waits(plane):
    for name in ("q1", "q2"):
        plane.apply(trainingjob(name, **ON_KWOK), namespace=NS)
        wait_phase(plane, "tj", name, NS, "Running", timeout=60)
    plane.apply(trainingjob("q3", **ON_KWOK), namespace=NS)
    wait_phase(plane, "tj", "q3", NS, "Queued", timeout=30)
    # Kueue's reason arrives with the Workload's QuotaReserved condition, a moment later.
    q3 = wait_for(lambda: (s := status_of(plane, "tj", "q3", NS)) and "insufficient unused quota"
                  in condition(s, "Ready").get("message", "") and s,
                  timeout=30, what="Kueue's reason in q3's status")
    ready = condition(q3, "Ready")
    assert ready["reason"] == "Queued"
    assert "insufficient unused quota for nvidia.com/gpu" in ready["message"], ready
    assert condition(q3, "Admitted")["status"] == "False"
    assert workers(plane, "q3") == []  # all workers or none: nothing of it holds a node
    printed = plane.kubectl("get", "tj", "q3", "-n", NS).stdout
    assert "Queued" in printed
    for name in ("q1", "q2"):
        assert admitted(plane, name)["status"] == "True"
        assert len(workers(plane, name)) == 2

    finish_pods(plane, NS, "tauon.dev/trainingjob=q1")
    wait_phase(plane, "tj", "q1", NS, "Succeeded", timeout=60)
    wait_phase(plane, "tj", "q3", NS, "Running", timeout=60)
    assert admitted(plane, "q3")["reason"] == "Admitted"
    for name in ("q2", "q3"):
        finish_pods(plane, NS, f"tauon.dev/trainingjob={name}")
        wait_phase(plane, "tj", name, NS, "Succeeded", timeout=60)


def test_a_higher_priority_run_preempts_a_lower_one_which_resumes_from_its_checkpoint(plane):
    # The low-priority run really trains (on the node agent, which advertises 8 GPUs), saving
    # a checkpoint each epoch; a medium-priority run fills the rest of the quota on kwok.
    plane.apply(trainingjob("low", gpus=8, workers=1, epochs=8, priority="low",
                            checkpoint={"everyEpochs": 1, "keepLast": 2},
                            evaluation={"metric": "accuracy", "minimum": 0.8}, **ON_AGENT),
                namespace=NS)
    plane.apply(trainingjob("filler", priority="medium", **ON_KWOK), namespace=NS)
    wait_phase(plane, "tj", "filler", NS, "Running", timeout=60)
    wait_for(lambda: (status_of(plane, "tj", "low", NS).get("progress") or {}).get("epoch", 0) >= 2
             and status_of(plane, "tj", "low", NS).get("latestCheckpoint"),
             timeout=300, interval=0.5, what="two epochs of the low-priority run")

    plane.apply(trainingjob("urgent", gpus=8, workers=1, priority="high", **ON_KWOK),
                namespace=NS)
    low = wait_for(lambda: (s := status_of(plane, "tj", "low", NS))
                   and condition(s, "Ready").get("reason") == "Preempted" and s,
                   timeout=60, what="the low-priority run preempted")
    assert low["phase"] == "Queued"
    assert "preempted by Kueue" in condition(low, "Ready")["message"]
    wait_phase(plane, "tj", "urgent", NS, "Running", timeout=60)
    assert condition(status_of(plane, "tj", "filler", NS), "Admitted")["status"] == "True"
    events = get_json(plane, "events", "-n", NS, "--field-selector", "involvedObject.name=low")
    assert any(e["reason"] == "Preempted" for e in events["items"])
    wait_for(lambda: not workers(plane, "low"), timeout=60, what="the preempted run's pods gone")

    finish_pods(plane, NS, "tauon.dev/trainingjob=urgent")
    wait_phase(plane, "tj", "urgent", NS, "Succeeded", timeout=60)
    # Readmitted, the same Job resumes: from its checkpoint, not from the start.
    low = wait_phase(plane, "tj", "low", NS, "Succeeded", timeout=600)
    assert low["model"]["metrics"]["accuracy"] >= 0.8
    assert low.get("restarts", 0) == 0  # a preemption is not a failure
    logs = plane.kubectl("logs", "job/low-a0", "-n", NS).stdout
    resumed = [json.loads(line) for line in logs.splitlines() if '"event": "resumed"' in line]
    assert resumed and resumed[0]["epoch"] >= 2, logs[-2000:]
    finish_pods(plane, NS, "tauon.dev/trainingjob=filler")
    wait_phase(plane, "tj", "filler", NS, "Succeeded", timeout=60)
