"""The local node agent runs pods bound to its node as real processes on this machine: env from
ConfigMaps and the downward API, volumes at their mount paths, a loopback address per pod,
probes, restart policies, pod DNS names, service-account tokens and `kubectl logs`."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from kubetest import new_namespace, wait_for
from localkube import Cluster, NodeAgentSpec, NodeSpec

pytestmark = pytest.mark.cluster

AGENT = "local-agent"
ON_AGENT = {"nodeSelector": {"tauon.dev/node-agent": "true"}}


@pytest.fixture(scope="module")
def kube():
    """A control plane of its own: one kwok GPU node next to the node agent (the session
    cluster's tests count exactly 4 kwok nodes)."""
    with Cluster.start(nodes=[NodeSpec("gpu-node-0")], agent=NodeAgentSpec(name=AGENT)) as c:
        yield c


@pytest.fixture
def ns(kube, request):
    name = f"agent-{request.node.name[5:25].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    yield new_namespace(kube, name)
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply(kube, ns: str, *objs: dict) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))


def pod(name: str, script: str, restart: str = "Never", **extra) -> dict:
    container = {"name": "main", "image": "tauon-runtime:dev",
                 "command": [sys.executable, "-c", script], **extra.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **extra.pop("meta", {})},
            "spec": {"restartPolicy": restart, "containers": [container], **ON_AGENT, **extra}}


def get(kube, ns: str, kind: str, name: str) -> dict:
    return kube.get_json(kind, name, "-n", ns)


def wait_phase(kube, ns: str, name: str, phases=("Succeeded", "Failed"), timeout=60) -> dict:
    def done():
        p = get(kube, ns, "pod", name)
        return p if p.get("status", {}).get("phase") in phases else None
    return wait_for(done, timeout=timeout, what=f"pod {name} in {phases}")


def test_the_node_is_ready_with_this_machines_capacity(kube):
    node = kube.get_json("node", AGENT)
    assert node["metadata"]["labels"]["tauon.dev/node-agent"] == "true"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    assert node["status"]["capacity"]["cpu"] == str(__import__("os").cpu_count())
    assert "nvidia.com/gpu" not in node["status"]["capacity"]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    lease = kube.get_json("lease", AGENT, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == AGENT


def test_a_pod_gets_env_volumes_its_own_address_and_logs(kube, ns):
    script = """
import json, os, socket
cfg = json.load(open("/etc/demo/config.json"))
print("greeting", os.environ["GREETING"], "from", os.environ["POD_IP"], "index", os.environ["INDEX"])
print("echo", os.environ["ECHO"])
with open("/data/out.txt", "w") as f:
    f.write(f"{cfg['model']} by {socket.gethostname()} at {os.environ['POD_IP']}")
"""
    apply(kube, ns,
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo"},
           "data": {"greeting": "hello", "config.json": json.dumps({"model": "cnn"})}},
          {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
          pod("writer", script,
              meta={"annotations": {"batch.kubernetes.io/job-completion-index": "1"}},
              container={
                  "env": [
                      {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "demo", "key": "greeting"}}},
                      {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                      {"name": "INDEX", "valueFrom": {"fieldRef": {"fieldPath":
                          "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                      {"name": "ECHO", "value": "$(GREETING)@$(POD_IP) $$(GREETING)"},
                  ],
                  "volumeMounts": [{"name": "config", "mountPath": "/etc/demo"},
                                   {"name": "data", "mountPath": "/data"}]},
              volumes=[{"name": "config", "configMap": {"name": "demo"}},
                       {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]))
    p = wait_phase(kube, ns, "writer")
    st = p["status"]
    term = st["containerStatuses"][0]["state"]["terminated"]
    assert (st["phase"], term["exitCode"], term["reason"]) == ("Succeeded", 0, "Completed")
    ip = st["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"  # its own loopback address
    assert p["spec"]["nodeName"] == AGENT

    pv = kube.get_json("pv", get(kube, ns, "pvc", "data")["spec"]["volumeName"])
    out = Path(pv["spec"]["hostPath"]["path"]) / "out.txt"
    assert out.read_text() == f"cnn by writer at {ip}"

    logs = kube.kubectl("logs", "writer", "-n", ns).stdout
    assert f"greeting hello from {ip} index 1" in logs
    assert f"echo hello@{ip} $(GREETING)" in logs
    # Nothing was created on this machine for the mount paths.
    assert not Path("/etc/demo").exists() and not Path("/data/out.txt").exists()


def test_a_server_pod_becomes_ready_answers_at_its_address_and_dies_with_its_pod(kube, ns):
    client = """
import urllib.request
for url in ("http://web:8080/", "http://web.%s.svc.cluster.local:8080/"):
    print(url, urllib.request.urlopen(url, timeout=5).status)
"""
    apply(kube, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                     "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}}, pod(
        "web", "", restart="Always", meta={"labels": {"app": "web"}},
        container={
            "command": [sys.executable, "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2,
                              "initialDelaySeconds": 2},
        }))
    kube.kubectl("wait", "--for=condition=Ready", "pod/web", "-n", ns, "--timeout=60s")
    ip = get(kube, ns, "pod", "web")["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as r:
        assert r.status == 200
    # Another pod reaches it by its Service's name (the ready endpoint's address: no kube-proxy).
    apply(kube, ns, pod("client", client % ns))
    assert wait_phase(kube, ns, "client")["status"]["phase"] == "Succeeded", \
        kube.kubectl("logs", "client", "-n", ns).stdout
    assert kube.kubectl("logs", "client", "-n", ns).stdout.count(" 200") == 2
    kube.kubectl("delete", "pod", "web", "-n", ns, "--timeout=60s")

    def closed():
        try:
            socket.create_connection((ip, 8080), timeout=1).close()
            return False
        except OSError:
            return True
    assert closed()
    assert kube.kubectl("get", "pod", "web", "-n", ns, check=False).returncode != 0


def test_exit_codes_termination_messages_and_restart_policies(kube, ns):
    script = "import sys; open('/dev/termination-log', 'w').write('out of cheese'); sys.exit(3)"
    apply(kube, ns, pod("never", script),
          pod("onfailure", "import sys; print('try'); sys.exit(1)", restart="OnFailure"))
    st = wait_phase(kube, ns, "never")["status"]
    term = st["containerStatuses"][0]["state"]["terminated"]
    assert (st["phase"], term["exitCode"], term["reason"]) == ("Failed", 3, "Error")
    assert term["message"] == "out of cheese"

    def restarted():
        cs = get(kube, ns, "pod", "onfailure")["status"].get("containerStatuses") or [{}]
        return cs[0].get("restartCount", 0) >= 2 and cs[0]
    cs = wait_for(restarted, timeout=60, what="restarts")
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert get(kube, ns, "pod", "onfailure")["status"]["phase"] == "Running"


def test_a_failing_liveness_probe_restarts_the_container(kube, ns):
    apply(kube, ns, pod("sick", "import time; time.sleep(600)", restart="Always", container={
        "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/healthy"]},
                          "periodSeconds": 1, "failureThreshold": 2},
    }, terminationGracePeriodSeconds=1))

    def restarted():
        cs = (get(kube, ns, "pod", "sick")["status"].get("containerStatuses") or [{}])[0]
        return cs.get("restartCount", 0) >= 1 and cs
    cs = wait_for(restarted, timeout=60, what="liveness restart")
    assert cs["lastState"]["terminated"]["exitCode"] in (137, 143)


def test_indexed_job_workers_find_each_other_by_pod_dns_name(kube, ns):
    script = """
import os, socket, time
me = int(os.environ["JOB_COMPLETION_INDEX"])
if me == 0:
    srv = socket.create_server((os.environ["POD_IP"], 29500))
    conn, _ = srv.accept()
    conn.sendall(b"hello from 0")
    conn.close()
else:
    for _ in range(120):
        try:
            addr = socket.gethostbyname("train-0.workers")
            with socket.create_connection((addr, 29500), timeout=2) as s:
                print("resolved", addr, "got", s.recv(100).decode())
            break
        except OSError as e:
            time.sleep(0.5)
    else:
        raise SystemExit("train-0.workers never answered")
"""
    apply(kube, ns,
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "workers"},
           "spec": {"clusterIP": "None", "selector": {"job-name": "train"},
                    "publishNotReadyAddresses": True}},
          {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
           "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed",
                    "backoffLimit": 0,
                    "template": {"spec": {
                        "subdomain": "workers", "restartPolicy": "Never", **ON_AGENT,
                        "containers": [{
                            "name": "worker", "image": "tauon-runtime:dev",
                            "command": [sys.executable, "-c", script],
                            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {
                                "fieldPath": "status.podIP"}}}]}]}}}})
    kube.kubectl("wait", "--for=condition=Complete", "job/train", "-n", ns, "--timeout=90s")
    pods = {p["spec"]["hostname"]: p for p in
            kube.get_json("pods", "-n", ns, "-l", "job-name=train")["items"]}
    ip0 = pods["train-0"]["status"]["podIP"]
    assert ip0 != pods["train-1"]["status"]["podIP"]
    logs = kube.kubectl("logs", pods["train-1"]["metadata"]["name"], "-n", ns).stdout
    assert f"resolved {ip0} got hello from 0" in logs


def test_a_pod_reads_itself_through_the_api_with_its_service_account_token(kube, ns):
    kube.kubectl("create", "serviceaccount", "reader", "-n", ns)
    kube.kubectl("create", "role", "pod-reader", "--verb=get", "--resource=pods", "-n", ns)
    kube.kubectl("create", "rolebinding", "reader", "--role=pod-reader",
                 f"--serviceaccount={ns}:reader", "-n", ns)
    script = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
ns = open(f"{sa}/namespace").read()
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
url = (f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
       f"/api/v1/namespaces/{ns}/pods/{os.environ['POD_NAME']}")
req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
me = json.load(urllib.request.urlopen(req, context=ctx))
print("I am", me["metadata"]["name"], "on", me["spec"]["nodeName"], "at", me["status"]["podIP"])
"""
    apply(kube, ns, pod("whoami", script, serviceAccountName="reader", container={
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}))
    st = wait_phase(kube, ns, "whoami")["status"]
    logs = kube.kubectl("logs", "whoami", "-n", ns).stdout
    assert st["phase"] == "Succeeded", logs
    assert f"I am whoami on {AGENT} at {st['podIP']}" in logs
