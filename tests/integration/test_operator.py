"""The operator on the real control plane: kwok GPU nodes, the real scheduler, Job and
Deployment controllers and garbage collector. Pods are simulated; a test ends them with an exit
code, as a container would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kubetest import (OperatorProcess, apply_objects, condition, finish_pods, get_json, status_of,
                      succeed_with_model, wait_for, wait_phase)

pytestmark = pytest.mark.cluster
GROUP = "tauon.dev/v1alpha1"
REPO = Path(__file__).resolve().parents[2]


apply = apply_objects


def dataset(name: str = "digits", **spec) -> dict:
    return {"apiVersion": GROUP, "kind": "Dataset", "metadata": {"name": name},
            "spec": {"source": {"builtin": {"name": "digits"}}, **spec}}


def trainingjob(name: str, dataset_name: str = "digits", **spec) -> dict:
    return {"apiVersion": GROUP, "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"datasetRef": {"name": dataset_name}, "model": {"architecture": "cnn"},
                     "hyperparameters": {"epochs": 2, "batchSize": 32}, **spec}}


def modeldeployment(name: str, **spec) -> dict:
    return {"apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": spec}


def ready_dataset(cluster, namespace: str, name: str = "digits") -> None:
    apply(cluster, namespace, dataset(name))
    finish_pods(cluster, namespace, f"tauon.dev/dataset={name}")
    wait_phase(cluster, "tds", name, namespace, "Ready")


def owned_by(obj: dict, kind: str, name: str) -> bool:
    return any(o["kind"] == kind and o["name"] == name and o.get("controller")
               for o in obj["metadata"].get("ownerReferences", []))


def test_dataset_becomes_a_claim_and_a_prepare_job_then_ready(cluster, namespace, tauon_operator):
    apply(cluster, namespace, dataset())
    job = wait_for(lambda: get_json(cluster, "jobs", "-n", namespace)["items"], what="prepare Job")[0]
    assert job["metadata"]["name"] == "digits-prepare"
    assert owned_by(job, "Dataset", "digits")
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "tauon"
    assert labels["app.kubernetes.io/instance"] == "digits"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["prepare"]
    pvc = get_json(cluster, "pvc", "digits-data", "-n", namespace)
    assert owned_by(pvc, "Dataset", "digits")
    config = json.loads(get_json(cluster, "configmap", "digits-prepare", "-n", namespace)["data"]["run.json"])
    assert config["source"] == {"builtin": {"name": "digits"}}
    assert config["outputDir"] == "/data"
    role = get_json(cluster, "role", "digits-prepare", "-n", namespace)
    assert role["rules"] == [{"apiGroups": ["tauon.dev"], "resources": ["datasets/status"],
                              "resourceNames": ["digits"], "verbs": ["get", "patch"]}]

    assert status_of(cluster, "tds", "digits", namespace)["phase"] in ("Pending", "Preparing")
    finish_pods(cluster, namespace, "tauon.dev/dataset=digits")
    status = wait_phase(cluster, "tds", "digits", namespace, "Ready")
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Reconciling")["status"] == "False"
    assert status["claimName"] == "digits-data"
    assert status["observedGeneration"] == 1


def test_every_example_reconciles_to_its_children(cluster, namespace, tauon_operator):
    """examples/*.yaml as a user applies them: the minimal and the full manifest of each kind."""
    for f in sorted((REPO / "examples").glob("*.yaml")):
        cluster.kubectl("apply", "-n", namespace, "-f", str(f))
    for name in ("example-minimal", "example-full"):
        finish_pods(cluster, namespace, f"tauon.dev/dataset={name}")
        wait_phase(cluster, "tds", name, namespace, "Ready")
        assert get_json(cluster, "pvc", f"{name}-data", "-n", namespace)["spec"]["resources"]
        wait_phase(cluster, "tj", name, namespace, "Running")
        [job] = get_json(cluster, "jobs", "-n", namespace, "-l", f"tauon.dev/trainingjob={name}")["items"]
        assert owned_by(job, "TrainingJob", name)
        # A headless Service names the workers to each other: only a run of several has one.
        kinds = ("configmap", "pvc", *(["service"] if name == "example-full" else []))
        for kind in kinds:
            suffix = {"configmap": "config", "service": "workers", "pvc": "output"}[kind]
            assert owned_by(get_json(cluster, kind, f"{name}-{suffix}", "-n", namespace), "TrainingJob", name)
        md = wait_for(lambda: (s := status_of(cluster, "mdep", name, namespace)).get("conditions") and s,
                      what=f"{name} ModelDeployment status")
        assert condition(md, "Ready")["reason"] == "WaitingForModel"
    assert cluster.kubectl("get", "service", "example-minimal-workers", "-n", namespace,
                           check=False).returncode != 0
    full = get_json(cluster, "jobs", "-n", namespace, "-l", "tauon.dev/trainingjob=example-full")["items"][0]
    assert full["spec"]["completions"] == 2
    assert full["spec"]["activeDeadlineSeconds"] <= 7200
    assert full["spec"]["ttlSecondsAfterFinished"] == 86400


def test_a_prepare_that_fails_for_good_ends_failed_without_retrying(cluster, namespace, tauon_operator):
    apply(cluster, namespace, dataset("bad"))
    finish_pods(cluster, namespace, "tauon.dev/dataset=bad", code=2)  # the runtime's "invalid input"
    status = wait_phase(cluster, "tds", "bad", namespace, "Failed")
    assert condition(status, "Failed")["status"] == "True"
    assert condition(status, "Stalled")["status"] == "True"
    time.sleep(2)
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "tauon.dev/dataset=bad")["items"]
    assert len(pods) == 1, "a permanent failure is not retried"


def test_trainingjob_waits_for_its_dataset_then_places_gpu_workers(cluster, namespace, tauon_operator):
    apply(cluster, namespace, dataset(),
          trainingjob("dist", workers=2, hyperparameters={"epochs": 2, "batchSize": 64},
                      resources={"gpus": 4, "cpu": "8", "memory": "32Gi"}))
    status = wait_for(lambda: (s := status_of(cluster, "tj", "dist", namespace))
                      .get("conditions") and s, what="TrainingJob status")
    assert status["phase"] == "Pending"
    assert condition(status, "Ready")["reason"] == "WaitingForDataset"
    assert not get_json(cluster, "jobs", "-n", namespace, "-l", "tauon.dev/trainingjob=dist")["items"]

    finish_pods(cluster, namespace, "tauon.dev/dataset=digits")
    wait_phase(cluster, "tj", "dist", namespace, "Running")
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "tauon.dev/trainingjob=dist")["items"]
    assert len(pods) == 2
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert all(n.startswith("gpu-node-") for n in nodes)
    assert sorted(p["spec"]["hostname"] for p in pods) == ["dist-a0-0", "dist-a0-1"]
    assert {p["spec"]["subdomain"] for p in pods} == {"dist-workers"}
    c = pods[0]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert c["command"] == ["torchrun"]
    assert "--nnodes=2" in c["args"] and "--node-rank=$(JOB_COMPLETION_INDEX)" in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MASTER_ADDR"] == "dist-a0-0.dist-workers"
    svc = get_json(cluster, "service", "dist-workers", "-n", namespace)
    assert svc["spec"]["clusterIP"] == "None"
    # Four GPUs each on 8-GPU nodes: the real scheduler placed both (maybe on one node).
    assert len(nodes) >= 1


def test_asking_for_more_gpus_than_any_node_has_is_reported(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("greedy", resources={"gpus": 16}))
    status = wait_for(lambda: (s := status_of(cluster, "tj", "greedy", namespace))
                      and condition(s, "Ready").get("reason") == "Unschedulable" and s,
                      timeout=30, what="Unschedulable in status")
    message = condition(status, "Ready")["message"]
    assert "Insufficient nvidia.com/gpu" in message
    assert status["phase"] == "Pending"
    events = get_json(cluster, "events", "-n", namespace,
                      "--field-selector", "involvedObject.name=greedy")["items"]
    assert any(e["reason"] == "Unschedulable" and e["type"] == "Warning" for e in events)


def test_workers_succeeding_make_the_trainingjob_succeed(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("ok"))
    wait_phase(cluster, "tj", "ok", namespace, "Running")
    finish_pods(cluster, namespace, "tauon.dev/trainingjob=ok")
    status = wait_phase(cluster, "tj", "ok", namespace, "Succeeded")
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Ready")["status"] == "True"
    assert status["completionTime"] and status["startTime"]


def test_a_failed_worker_restarts_the_group_until_the_backoff_limit(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("flaky", workers=2, backoffLimit=1,
                                          hyperparameters={"epochs": 2, "batchSize": 64}))
    wait_phase(cluster, "tj", "flaky", namespace, "Running")
    finish_pods(cluster, namespace, "tauon.dev/trainingjob=flaky,tauon.dev/attempt=0", code=1, count=1)
    wait_for(lambda: status_of(cluster, "tj", "flaky", namespace).get("restarts") == 1,
             what="restart counted")
    # The whole group is replaced by the next attempt, from the latest checkpoint.
    wait_for(lambda: len([p for p in get_json(cluster, "pods", "-n", namespace, "-l",
                                              "tauon.dev/trainingjob=flaky,tauon.dev/attempt=1")["items"]
                          if p["status"].get("phase") == "Running"]) == 2, what="attempt 1 running")
    wait_for(lambda: not get_json(cluster, "jobs", "-n", namespace, "-l",
                                  "tauon.dev/trainingjob=flaky,tauon.dev/attempt=0")["items"],
             what="attempt 0 gone")
    wait_phase(cluster, "tj", "flaky", namespace, "Running")

    finish_pods(cluster, namespace, "tauon.dev/trainingjob=flaky,tauon.dev/attempt=1", code=1, count=1)
    status = wait_phase(cluster, "tj", "flaky", namespace, "Failed")
    assert condition(status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert status["restarts"] == 1


def test_a_model_below_the_evaluation_gate_fails_without_restart(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("weak", backoffLimit=3,
                                          evaluation={"metric": "accuracy", "minimum": 0.99}))
    finish_pods(cluster, namespace, "tauon.dev/trainingjob=weak", code=3)
    status = wait_phase(cluster, "tj", "weak", namespace, "Failed")
    assert condition(status, "Failed")["reason"] == "BelowEvaluationGate"
    assert not status.get("restarts")


def test_suspend_removes_workers_and_resume_brings_them_back(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("pausable"))
    wait_phase(cluster, "tj", "pausable", namespace, "Running")
    cluster.kubectl("patch", "tj", "pausable", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"suspend": true}}')
    wait_phase(cluster, "tj", "pausable", namespace, "Suspended")
    wait_for(lambda: not get_json(cluster, "pods", "-n", namespace, "-l",
                                  "tauon.dev/trainingjob=pausable")["items"], what="pods removed")
    cluster.kubectl("patch", "tj", "pausable", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"suspend": false}}')
    status = wait_phase(cluster, "tj", "pausable", namespace, "Running")
    assert not status.get("restarts"), "suspend is not a failure"


def test_the_active_deadline_fails_the_run(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("slow", activeDeadlineSeconds=3))
    status = wait_phase(cluster, "tj", "slow", namespace, "Failed", timeout=60)
    assert condition(status, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not get_json(cluster, "pods", "-n", namespace, "-l",
                                  "tauon.dev/trainingjob=slow")["items"], what="workers stopped")


def test_deleting_a_custom_resource_leaves_no_children(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("gone"))
    wait_phase(cluster, "tj", "gone", namespace, "Running")
    cluster.kubectl("delete", "tj", "gone", "-n", namespace)
    cluster.kubectl("delete", "tds", "digits", "-n", namespace)
    kinds = "jobs,pods,configmaps,services,pvc,serviceaccounts,roles,rolebindings"

    def leftovers():
        items = get_json(cluster, kinds, "-n", namespace, "-l", "app.kubernetes.io/managed-by=tauon")["items"]
        return [f"{i['kind']}/{i['metadata']['name']}" for i in items]

    wait_for(lambda: not leftovers(), timeout=60, what="garbage collection")


def test_bad_references_end_in_clear_conditions_without_a_hot_loop(cluster, namespace, tauon_operator):
    apply(cluster, namespace, trainingjob("lost", dataset_name="missing"),
          modeldeployment("nojob", model={"trainingJobRef": {"name": "missing"}}))
    tj = wait_for(lambda: (s := status_of(cluster, "tj", "lost", namespace))
                  and condition(s, "Stalled").get("status") == "True" and s, what="Stalled")
    assert condition(tj, "Stalled")["reason"] == "DatasetNotFound"
    assert "missing" in condition(tj, "Stalled")["message"]
    md = wait_for(lambda: (s := status_of(cluster, "mdep", "nojob", namespace))
                  and condition(s, "Stalled").get("status") == "True" and s, what="Stalled")
    assert condition(md, "Stalled")["reason"] == "TrainingJobNotFound"

    # A ModelDeployment following a TrainingJob that failed says so.
    ready_dataset(cluster, namespace)
    apply(cluster, namespace, trainingjob("broken"),
          modeldeployment("follows-broken", model={"trainingJobRef": {"name": "broken"}}))
    finish_pods(cluster, namespace, "tauon.dev/trainingjob=broken", code=2)
    wait_phase(cluster, "tj", "broken", namespace, "Failed")
    md = wait_for(lambda: (s := status_of(cluster, "mdep", "follows-broken", namespace))
                  and condition(s, "Stalled").get("reason") == "TrainingJobFailed" and s,
                  what="TrainingJobFailed")
    assert md["phase"] == "Failed"

    # Idle means idle: no writes to a settled object.
    versions = {n: get_json(cluster, k, n, "-n", namespace)["metadata"]["resourceVersion"]
                for k, n in (("tj", "lost"), ("mdep", "nojob"), ("mdep", "follows-broken"))}
    time.sleep(15)
    for (k, n) in (("tj", "lost"), ("mdep", "nojob"), ("mdep", "follows-broken")):
        assert get_json(cluster, k, n, "-n", namespace)["metadata"]["resourceVersion"] == versions[n]


def trained(cluster, namespace: str, name: str, sha: str) -> None:
    """A TrainingJob that succeeded with a model, as the runtime reports it."""
    apply(cluster, namespace, trainingjob(name))
    succeed_with_model(cluster, namespace, name, sha)


def test_modeldeployment_serves_its_trainingjobs_model_and_rolls_to_a_new_one(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    sha1, sha2 = "a" * 64, "b" * 64
    trained(cluster, namespace, "v1", sha1)
    apply(cluster, namespace, modeldeployment("web", model={"trainingJobRef": {"name": "v1"}}, replicas=2))
    status = wait_phase(cluster, "mdep", "web", namespace, "Ready")
    assert status["modelDigest"] == sha1
    assert status["replicas"] == {"desired": 2, "ready": 2, "updated": 2}
    assert status["url"] == f"http://web.{namespace}.svc.cluster.local"
    dep = get_json(cluster, "deployment", "web", "-n", namespace)
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    assert pod["volumes"][2]["persistentVolumeClaim"] == {"claimName": "v1-output", "readOnly": True}
    assert get_json(cluster, "service", "web", "-n", namespace)["spec"]["ports"][0]["port"] == 80

    trained(cluster, namespace, "v2", sha2)
    cluster.kubectl("patch", "mdep", "web", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"model": {"trainingJobRef": {"name": "v2"}}}}')
    status = wait_for(lambda: (s := status_of(cluster, "mdep", "web", namespace))
                      .get("modelDigest") == sha2 and s.get("phase") == "Ready" and s,
                      what="rolled to v2")
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "tauon.dev/modeldeployment=web")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert {p["metadata"]["annotations"]["tauon.dev/model-digest"] for p in live} == {sha2}


def test_canary_and_autoscaling(cluster, namespace, tauon_operator):
    ready_dataset(cluster, namespace)
    trained(cluster, namespace, "stable", "c" * 64)
    trained(cluster, namespace, "candidate", "d" * 64)
    apply(cluster, namespace, modeldeployment(
        "split", model={"trainingJobRef": {"name": "stable"}}, replicas=4,
        canary={"model": {"trainingJobRef": {"name": "candidate"}}, "trafficPercent": 25}))
    status = wait_phase(cluster, "mdep", "split", namespace, "Ready")
    assert status["canary"] == {"modelDigest": "d" * 64, "readyReplicas": 1, "trafficPercent": 25}
    assert get_json(cluster, "deployment", "split", "-n", namespace)["spec"]["replicas"] == 3
    assert get_json(cluster, "deployment", "split-canary", "-n", namespace)["spec"]["replicas"] == 1

    apply(cluster, namespace, modeldeployment(
        "elastic", model={"trainingJobRef": {"name": "stable"}},
        autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}))
    hpa = wait_for(lambda: get_json(cluster, "hpa", "-n", namespace)["items"], what="HPA")[0]
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"]["name"] == "elastic"


def test_restarting_the_operator_mid_creation_leaves_no_duplicates(cluster, namespace, tauon_operator,
                                                                   operator_kubeconfig):
    ready_dataset(cluster, namespace)
    tauon_operator.stop()
    try:
        second = OperatorProcess(operator_kubeconfig).start()
        jobs = [trainingjob(f"tj-{i:02d}") for i in range(50)]
        apply(cluster, namespace, *jobs[:25])
        time.sleep(1.0)
        second.stop()  # in the middle: some reconciled, some not, some half-way
        apply(cluster, namespace, *jobs[25:])
    finally:
        tauon_operator.start()

    def all_running():
        items = get_json(cluster, "tj", "-n", namespace)["items"]
        return len(items) == 50 and all((i.get("status") or {}).get("phase") == "Running"
                                        for i in items)

    wait_for(all_running, timeout=120, what="50 TrainingJobs Running")
    jobs = get_json(cluster, "jobs", "-n", namespace, "-l", "app.kubernetes.io/component=trainer")["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [f"tj-{i:02d}-a0" for i in range(50)]
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=trainer")["items"]
    assert len(pods) == 50


POOL_TAINT = {"key": "pool.example/a100", "value": "reserved", "effect": "NoSchedule"}


def a100_pool(cluster) -> dict:
    """A kwok node of a pool tainted for one team (made once per cluster); the node selector
    that picks it."""
    from localkube import NodeSpec

    if cluster.kubectl("get", "node", "a100-0", check=False).returncode:
        cluster.add_nodes([NodeSpec(name="a100-0", labels={"pool.example/a100": "reserved"},
                                    taints=(POOL_TAINT,))])
    return {"nodeSelector": {"pool.example/a100": "reserved"}}


def test_a_tainted_gpu_pool_takes_only_runs_that_tolerate_it(cluster, namespace, tauon_operator):
    """A node pool tainted for one team: a TrainingJob with the toleration (and a node selector
    for the pool) lands there; without the toleration its condition names the taint."""
    pool = a100_pool(cluster)
    ready_dataset(cluster, namespace)
    apply(cluster, namespace,
          trainingjob("tolerant", tolerations=[{**POOL_TAINT, "operator": "Equal"}], **pool),
          trainingjob("intolerant", **pool))
    wait_phase(cluster, "tj", "tolerant", namespace, "Running")
    [p] = get_json(cluster, "pods", "-n", namespace, "-l", "tauon.dev/trainingjob=tolerant")["items"]
    assert p["spec"]["nodeName"] == "a100-0"
    status = wait_for(lambda: (s := status_of(cluster, "tj", "intolerant", namespace))
                      and condition(s, "Ready").get("reason") == "Unschedulable" and s,
                      timeout=30, what="Unschedulable in status")
    message = condition(status, "Ready")["message"]
    assert "untolerated: pool.example/a100=reserved:NoSchedule" in message, message

    # Another manager's annotation on a child stays through the operator's repairs.
    cluster.kubectl("annotate", "job", "tolerant-a0", "-n", namespace, "example.com/owner=team-a")
    uid = get_json(cluster, "configmap", "tolerant-config", "-n", namespace)["metadata"]["uid"]
    cluster.kubectl("delete", "configmap", "tolerant-config", "-n", namespace)
    wait_for(lambda: get_json(cluster, "configmap", "-n", namespace)["items"] and any(
        c["metadata"]["name"] == "tolerant-config" and c["metadata"]["uid"] != uid
        for c in get_json(cluster, "configmap", "-n", namespace)["items"]), what="repaired")
    job = get_json(cluster, "job", "tolerant-a0", "-n", namespace)
    assert job["metadata"]["annotations"]["example.com/owner"] == "team-a"


def test_inference_pods_are_placed_as_the_modeldeployment_asks(cluster, namespace, tauon_operator):
    """Serving pods take the same placement as training pods: with the pool's toleration and
    node selector they run on the tainted pool; the chart's GPU toleration comes first."""
    pool = a100_pool(cluster)
    ready_dataset(cluster, namespace)
    trained(cluster, namespace, "model", "e" * 64)
    toleration = {**POOL_TAINT, "operator": "Equal"}
    apply(cluster, namespace, modeldeployment(
        "pooled", model={"trainingJobRef": {"name": "model"}}, replicas=1,
        tolerations=[toleration], **pool))
    template = wait_for(lambda: get_json(cluster, "deployment", "-n", namespace)["items"] and
                        get_json(cluster, "deployment", "pooled", "-n", namespace),
                        what="the Deployment")["spec"]["template"]["spec"]
    assert toleration in template["tolerations"]
    assert template["nodeSelector"] == pool["nodeSelector"]
    pods = wait_for(lambda: [p for p in get_json(cluster, "pods", "-n", namespace, "-l",
                                                 "tauon.dev/modeldeployment=pooled")["items"]
                             if p["spec"].get("nodeName")], what="a scheduled inference pod")
    assert {p["spec"]["nodeName"] for p in pods} == {"a100-0"}


def test_a_toleration_is_checked_by_the_api_servers_own_schema(cluster, namespace, crds):
    bad = trainingjob("bad", tolerations=[{"key": "x", "operator": "Sometimes"}])
    res = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert res.returncode != 0
    assert "spec.tolerations[0].operator" in res.stderr and "Sometimes" in res.stderr, res.stderr
    explained = cluster.kubectl("explain", "trainingjob.spec.tolerations.effect").stdout
    assert "NoSchedule" in explained
