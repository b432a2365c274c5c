"""Kubeflow's training-operator as the peer of bench/operator_scale.py (`--peer training-operator`).

The peer is what a user would run instead: training-operator v1.8.1 (Go, controller-runtime),
built from the Go module proxy by hack/build-training-operator.sh, run as released (its
Deployment's defaults: one controller thread, no gang scheduler) against the same control plane,
as its own ServiceAccount so the API server counts its requests, on its own pool of kwok nodes.

Its webhook is not in the path: the API server of the local platform cannot reach a Service,
and the operator's own Jobs are not validated by a webhook either. training-operator still
insists on managing its webhook certificate (cert-controller), so the Secret and the
ValidatingWebhookConfiguration it rotates exist, the configuration with no webhooks in it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

from localkube import Cluster
from localkube.cluster import ClusterError
from localkube.procutil import free_port, wait_for_url

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "kubeflow"  # where it keeps its webhook certificate (MY_POD_NAMESPACE)
SECRET = "training-operator-webhook-cert"
WEBHOOK_CONFIG = "validator.training-operator.kubeflow.org"
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # fixed in training-operator's code
GROUP_VERSION = "kubeflow.org/v1"
VERSION = os.environ.get("TRAINING_OPERATOR_VERSION", "v1.8.1")  # hack/build-training-operator.sh


def build() -> Path:
    """The cached build (bin/training-operator, crds/kubeflow.org_pytorchjobs.yaml)."""
    out = subprocess.run([str(REPO / "hack" / "build-training-operator.sh")], check=True,
                         capture_output=True, text=True, env={**os.environ, "TRAINING_OPERATOR_VERSION": VERSION})
    return Path(out.stdout.strip().splitlines()[-1])


def install(cluster: Cluster, built: Path) -> None:
    crd = built / "crds" / "kubeflow.org_pytorchjobs.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(crd))
    deadline = time.monotonic() + 120  # `kubectl wait` fails while .status.conditions is unset
    while not any(c["type"] == "Established" and c["status"] == "True" for c in
                  (cluster.get_json("crd", "pytorchjobs.kubeflow.org").get("status") or {})
                  .get("conditions") or []):
        if time.monotonic() > deadline:
            raise ClusterError("the PyTorchJob CRD was not Established within 120 s")
        time.sleep(0.2)
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": WEBHOOK_CONFIG}, "webhooks": []},
    )


def start(cluster: Cluster, built: Path, kubeconfig: Path) -> tuple[int, str]:
    """Spawned through the cluster (stopping the cluster stops it); returns (pid, metrics URL)
    once it is ready (its certificates written, its controllers registered)."""
    metrics, probes, webhook = free_port(), free_port(), free_port()
    argv = [str(built / "bin" / "training-operator"), "--enable-scheme=pytorchjob",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            f"--health-probe-bind-address=127.0.0.1:{probes}",
            f"--webhook-server-port={webhook}"]
    env = {"KUBECONFIG": str(kubeconfig), "MY_POD_NAMESPACE": NAMESPACE,
           "HOME": os.environ.get("HOME", "/tmp")}
    proc = cluster._spawn("training-operator", argv, env)
    try:
        mount_certificate(cluster, proc)
        wait_for_url(f"http://127.0.0.1:{probes}/readyz", 120, proc=proc, interval=0.5)
    except (ChildProcessError, TimeoutError):
        tail = (cluster.logs / "training-operator.log").read_text(errors="replace")[-3000:]
        raise ClusterError(f"training-operator did not become ready:\n{tail}") from None
    return proc.pid, f"http://127.0.0.1:{metrics}/metrics"


def mount_certificate(cluster: Cluster, proc, timeout: float = 60) -> None:
    """Does what the kubelet's secret volume does for its Deployment: the certificate it
    writes into its Secret appears as files in the directory it waits on (cert-controller
    generates, the kubelet mounts; there is no kubelet in front of a host process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChildProcessError(proc.returncode)
        data = cluster.get_json("secret", SECRET, "-n", NAMESPACE).get("data") or {}
        if {"tls.crt", "tls.key", "ca.crt"} <= data.keys():
            CERT_DIR.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                tmp = CERT_DIR / f".{key}.tmp"
                tmp.write_bytes(base64.b64decode(value))
                tmp.replace(CERT_DIR / key)
            return
        time.sleep(0.3)
    raise TimeoutError("training-operator wrote no certificate into its Secret")


def pytorchjob(name: str, labels: dict, pod_spec: dict) -> dict:
    """One master replica running the given pod spec (its container renamed `pytorch`, the
    name training-operator requires), its pods carrying `labels`."""
    spec = {**pod_spec, "containers": [{**c, "name": "pytorch"} for c in pod_spec["containers"]]}
    spec.pop("restartPolicy", None)
    return {"apiVersion": GROUP_VERSION, "kind": "PyTorchJob",
            "metadata": {"name": name, "labels": labels},
            "spec": {"runPolicy": {"backoffLimit": 0},
                     "pytorchReplicaSpecs": {"Master": {
                         "replicas": 1, "restartPolicy": "Never",
                         "template": {"metadata": {"labels": labels}, "spec": spec}}}}}
