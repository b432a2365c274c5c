"""The local control plane is a real one: the scheduler places pods, controllers run, volumes
bind, Pod Security admission and RBAC are enforced."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from kubetest import get_json, wait_for

pytestmark = pytest.mark.cluster


def apply(cluster, namespace: str, manifest: str, check: bool = True):
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=check)


def test_nodes_advertise_gpus(cluster):
    # The cluster's own kwok nodes (other tests on this shared cluster add pools of their own).
    nodes = [n for n in get_json(cluster, "nodes")["items"]
             if n["metadata"]["name"].startswith("gpu-node-")]
    assert len(nodes) == 4
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"


def test_deployment_becomes_available(cluster, namespace):
    cluster.kubectl("create", "deployment", "web", "--image=registry.k8s.io/pause:3.10",
                    "--replicas=3", "-n", namespace)
    cluster.kubectl("wait", "--for=condition=Available", "deployment/web", "-n", namespace,
                    "--timeout=60s")
    pods = get_json(cluster, "pods", "-n", namespace)["items"]
    assert len(pods) == 3
    assert all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods)
    assert all(p["status"]["phase"] == "Running" for p in pods)


def test_pvc_binds_and_its_pod_is_scheduled(cluster, namespace):
    apply(cluster, namespace, """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  containers: [{name: c, image: registry.k8s.io/pause:3.10, volumeMounts: [{name: d, mountPath: /data}]}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
""")
    wait_for(lambda: get_json(cluster, "pvc", "data", "-n", namespace)["status"].get("phase") == "Bound",
             what="PVC Bound")
    pv = get_json(cluster, "pvc", "data", "-n", namespace)["spec"]["volumeName"]
    assert get_json(cluster, "pv", pv)["spec"]["storageClassName"] == "tauon-local"
    pod = wait_for(lambda: (p := get_json(cluster, "pod", "reader", "-n", namespace))
                   ["status"].get("phase") == "Running" and p, what="pod Running")
    assert pod["spec"]["nodeName"]


def test_indexed_job_pods_have_stable_hostnames_and_complete_when_marked_done(cluster, namespace):
    apply(cluster, namespace, """
apiVersion: v1
kind: Service
metadata: {name: workers}
spec: {clusterIP: None, selector: {job-name: train}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: train}
spec:
  completions: 2
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      subdomain: workers
      restartPolicy: Never
      containers:
      - name: worker
        image: registry.k8s.io/pause:3.10
        resources: {limits: {nvidia.com/gpu: 4}}
""")

    def running_pods():
        pods = get_json(cluster, "pods", "-n", namespace, "-l", "job-name=train")["items"]
        return len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods) and pods

    pods = wait_for(running_pods, what="2 running workers")
    assert sorted(p["spec"]["hostname"] for p in pods) == ["train-0", "train-1"]
    assert {p["spec"]["subdomain"] for p in pods} == {"workers"}
    job = get_json(cluster, "job", "train", "-n", namespace)
    assert job["status"].get("completed") is None or job["status"].get("succeeded", 0) == 0

    for p in pods:
        cluster.kubectl("annotate", "pod", p["metadata"]["name"], "-n", namespace,
                        "sim.tauon.dev/exit-code=0")
    cluster.kubectl("wait", "--for=condition=Complete", "job/train", "-n", namespace,
                    "--timeout=60s")
    assert get_json(cluster, "job", "train", "-n", namespace)["status"]["succeeded"] == 2


def test_a_pod_marked_failed_fails_its_job(cluster, namespace):
    apply(cluster, namespace, """
apiVersion: batch/v1
kind: Job
metadata: {name: doomed}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: registry.k8s.io/pause:3.10}]
""")
    pod = wait_for(lambda: [p for p in get_json(cluster, "pods", "-n", namespace)["items"]
                            if p["status"].get("phase") == "Running"], what="pod Running")[0]
    cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace,
                    "sim.tauon.dev/exit-code=3")
    cluster.kubectl("wait", "--for=condition=Failed", "job/doomed", "-n", namespace,
                    "--timeout=60s")
    status = get_json(cluster, "pod", pod["metadata"]["name"], "-n", namespace)["status"]
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_privileged_pod_is_rejected_in_a_restricted_namespace(cluster, namespace):
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    res = apply(cluster, namespace, """
apiVersion: v1
kind: Pod
metadata: {name: root}
spec:
  containers:
  - name: c
    image: registry.k8s.io/pause:3.10
    securityContext: {privileged: true}
""", check=False)
    assert res.returncode != 0
    assert 'violates PodSecurity "restricted' in res.stderr
    assert "privileged" in res.stderr
    assert cluster.kubectl("get", "pod", "root", "-n", namespace, check=False).returncode != 0


def test_service_account_without_rbac_rights_is_refused(cluster, namespace):
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    ctx = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))

    def get(path: str) -> int:
        req = urllib.request.Request(f"{cluster.server}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
            assert body["reason"] == "Forbidden"
            assert f"system:serviceaccount:{namespace}:nobody" in body["message"]
            return e.code

    # Authenticated (a bad token would get 401) but not authorized.
    assert get(f"/api/v1/namespaces/{namespace}/pods") == 403
    assert get("/api/v1/secrets") == 403

    # Granting exactly one right makes exactly that request pass: RBAC, not a blanket refusal.
    cluster.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "nobody-reads", "--role=pod-reader",
                    f"--serviceaccount={namespace}:nobody", "-n", namespace)
    wait_for(lambda: get(f"/api/v1/namespaces/{namespace}/pods") == 200, what="RBAC grant")
    assert get("/api/v1/secrets") == 403
