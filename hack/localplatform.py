"""Tauon on the local control plane, for the demo and the end-to-end tests.

A real control plane with kwok simulating GPU nodes, a local node agent that runs the pods
Tauon creates as processes on this machine, the CRDs, and the operator as its own process.
The simulated nodes carry a taint, so the runtime pods (which need no GPU here) are scheduled
onto the node agent, where they really run.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from localkube import Cluster, ClusterError, NodeAgentSpec, NodeSpec

REPO = Path(__file__).resolve().parent.parent
SIMULATED_TAINT = {"key": "tauon.dev/simulated", "value": "true", "effect": "NoSchedule"}
# Pods run this checkout's code, as the runtime image would run its own.
SOURCE_PATH = os.pathsep.join(str(REPO / d) for d in ("operator", "runtime"))


STORE_SECRET = "tauon-store"  # the credentials Secret, in every namespace that uses the store
# A block-storage cluster (EBS, PD): the local StorageClass refuses ReadWriteMany claims, so
# every run proves no feature needs one.
BLOCK_STORAGE = ("ReadWriteOnce",)


def start(state_dir: Path | None = None, gpu_nodes: int = 4, operator: bool = True,
          operator_kubeconfig: Path | None = None, object_store: bool = True,
          access_modes: tuple[str, ...] | None = BLOCK_STORAGE, agent_gpus: int = 0,
          kueue: bool = False) -> Cluster:
    """The platform; with `object_store` SeaweedFS is the artifact store (the operator is
    configured with it and the `default` namespace holds its credentials Secret); with `kueue`
    Kueue runs before the operator starts (localkube.kueue); the node agent advertises
    `agent_gpus` nvidia.com/gpu (its pods still train on the CPU)."""
    nodes = [NodeSpec(name=f"gpu-node-{i}", taints=(SIMULATED_TAINT,)) for i in range(gpu_nodes)]
    agent = NodeAgentSpec(image_env={"PYTHONPATH": SOURCE_PATH}, gpus=agent_gpus,
                          image_paths=tuple(SOURCE_PATH.split(os.pathsep)))
    cluster = Cluster.start(state_dir, nodes=nodes, agent=agent, access_modes=access_modes)
    try:
        install_crds(cluster)
        if object_store:
            cluster.start_object_store()
            grant_store(cluster, "default")
        if kueue:
            from localkube.kueue import Kueue

            Kueue.start(cluster)
        if operator:
            start_operator(cluster, operator_kubeconfig)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def install_crds(cluster: Cluster) -> list[str]:
    names = []
    for f in sorted((REPO / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(f))
        names.append(re.search(r"^  name: (\S+)", f.read_text(), re.M).group(1))
    for name in names:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return names


def start_operator(cluster: Cluster, kubeconfig: Path | None = None, metrics: bool = False) -> int:
    """`tauon-operator run` as a process of the cluster (stopped with it); with `metrics`, its
    Prometheus metrics on a free port, which it returns. A port another process took between
    choosing it and the operator's bind (a parallel test session's SeaweedFS, say) is given up
    for another: the operator would otherwise retry the bind forever and reconcile nothing."""
    from localkube.procutil import free_port, http_ok, terminate

    exe = Path(sys.executable).parent / "tauon-operator"
    env = {
        "KUBECONFIG": str(kubeconfig or cluster.kubeconfig),
        "PYTHONPATH": os.pathsep.join([SOURCE_PATH, os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "TAUON_FEEDBACK_POLL_SECONDS": "5",  # status.feedbackCount moves while one watches
        **store_settings(cluster),
    }
    for _ in range(5):
        port = free_port() if metrics else 0
        args = [str(exe), "run", f"--metrics-port={port}", "--health-port=0"]
        proc = cluster.spawn("tauon-operator", args, env=env)
        time.sleep(2)
        cluster.check_alive()  # a bad flag or import error shows here, with the log's tail
        if not port:
            return 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if http_ok(f"http://127.0.0.1:{port}/metrics"):
                return port
            time.sleep(0.5)
        terminate([proc], grace=5, group=False)  # the port was not ours: another one
    raise ClusterError("the operator could not serve its metrics on any of 5 free ports")


CONSOLE_NAMESPACE = "tauon-system"


def render_chart(values: dict, release: str = "tauon") -> list[dict]:
    """`helm template` of charts/tauon in CONSOLE_NAMESPACE (helm from the environment)."""
    import subprocess
    import tempfile

    import yaml

    helm = Path(sys.executable).parent / "helm"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        out = subprocess.run([str(helm), "template", release, str(REPO / "charts" / "tauon"),
                              "--namespace", CONSOLE_NAMESPACE, "-f", f.name],
                             capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def start_console(cluster: Cluster, namespace: str = "default", timeout: float = 120) -> str:
    """The chart's console objects (ServiceAccount, read-only ClusterRole and binding,
    Deployment, Service) applied as `helm install` would create them; the node agent runs its
    pod. Returns the console's URL (its pod's address: there is no kube-proxy here)."""
    docs = [d for d in render_chart({"console": {"namespace": namespace}})
            if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "console"]
    if cluster.kubectl("get", "namespace", CONSOLE_NAMESPACE, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", CONSOLE_NAMESPACE)
    cluster.kubectl("apply", "--server-side", "-f", "-",
                    input="\n---\n".join(json.dumps(d) for d in docs))
    [svc] = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]
    endpoint = wait(lambda: ready_endpoints(cluster, CONSOLE_NAMESPACE, svc), timeout,
                    "the console's pod ready", cluster=cluster)[0]
    return f"http://{endpoint}"


def store_settings(cluster: Cluster) -> dict[str, str]:
    """The operator's artifact-store settings (the Helm chart's `store.*`) for the cluster's
    object store; none when it has no store."""
    store = cluster.object_store
    if store is None:
        return {}
    return {"TAUON_STORE_ENDPOINT": store.endpoint, "TAUON_STORE_BUCKET": store.bucket,
            "TAUON_STORE_PREFIX": "tauon", "TAUON_STORE_REGION": store.region,
            "TAUON_STORE_SECRET": STORE_SECRET}


def grant_store(cluster: Cluster, namespace: str) -> None:
    """The store's credentials Secret in `namespace`: its pods may then publish and fetch."""
    secret = cluster.object_store.secret(STORE_SECRET)
    secret["metadata"]["namespace"] = namespace
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))


def tampered_copy(cluster: Cluster, uri: str, name: str = "tampered") -> str:
    """The model version at `uri` copied in the store under `name` with one bit of its weights
    flipped and its manifest unchanged (as an attacker or a bad disk would leave it); returns
    the copy's URI."""
    import obstore

    client, bucket = cluster.object_store.client(), cluster.object_store.bucket
    src = uri.removeprefix(f"s3://{bucket}/")
    models, _, rest = src.partition("/models/")
    dst = f"{models}/models/{name}/{rest.partition('/')[2]}"
    for batch in obstore.list(client, src):
        for obj in batch:
            data = bytes(obstore.get(client, obj["path"]).bytes())
            if obj["path"].endswith(".safetensors"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            obstore.put(client, dst + obj["path"].removeprefix(src), data)
    return f"s3://{bucket}/{dst}"


def volume_dir(cluster: Cluster, namespace: str, claim: str) -> Path:
    """Where a claim's data lives on this machine (the PV's hostPath)."""
    pvc = json.loads(cluster.kubectl("get", "pvc", claim, "-n", namespace, "-o", "json").stdout)
    pv = json.loads(cluster.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    return Path(pv["spec"]["hostPath"]["path"])


def ready_endpoints(cluster: Cluster, namespace: str, service: str) -> list[str]:
    """`ip:port` of every ready pod behind a Service, computed as the EndpointSlice controller
    and kube-proxy would: the Service's selector over Ready pods, its targetPort resolved by
    name. (The controller cannot publish them itself: EndpointSlice validation refuses
    loopback addresses, and every pod of the node agent has one.)"""
    svc = json.loads(cluster.kubectl("get", "service", service, "-n", namespace, "-o", "json").stdout)
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    target = svc["spec"]["ports"][0].get("targetPort", svc["spec"]["ports"][0]["port"])
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", selector,
                                      "-o", "json").stdout)["items"]
    out = []
    for pod in pods:
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"].get("conditions") or [])
        if not ready or pod["metadata"].get("deletionTimestamp") or not pod["status"].get("podIP"):
            continue
        port = target
        if isinstance(target, str):
            port = next((p["containerPort"] for c in pod["spec"]["containers"]
                         for p in c.get("ports") or [] if p.get("name") == target), None)
        if port:
            out.append(f"{pod['status']['podIP']}:{port}")
    return sorted(out)


def wait(check, timeout: float, what: str, interval: float = 0.5, cluster: Cluster | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if cluster is not None:
            cluster.check_alive()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
