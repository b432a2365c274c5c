"""Kueue (built from the Go module proxy by hack/build-kueue.sh) against a local control plane:
its CRDs, its webhooks on loopback, and its controller as one more process of the cluster.

The API server must call Kueue's webhooks (the Job defaulter that suspends a queued Job at
creation, the validators, the CRDs' conversion) over HTTPS. In a real cluster they go through a
Service; here the webhook server listens on 127.0.0.1 and every webhook configuration and CRD
conversion names it by URL, with a CA made by localkube.pki. Kueue's own certificate manager
(cert-controller) stays on, as in Kueue's default install: it finds that CA and the serving
cert already in its Secret, keeps them (they are valid for its Service name too) and injects
the CA into the configurations by name; the files are where a pod would have the Secret
mounted.

    with Cluster.start(nodes=gpu_nodes(2)) as c:
        kueue = Kueue.start(c)
        c.apply(*queue_objects("gpus", gpus=16))"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from localkube import pki
from localkube.cluster import HACK, Cluster, ClusterError
from localkube.procutil import free_port, http_ok

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # the names Kueue's certificate manager derives the rest from
SECRET = "kueue-webhook-server-cert"
# Kueue's multi-version CRDs: the API server converts between v1beta1 and v1beta2 through it.
CONVERTED = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
# The webhooks kept: Kueue's own kinds and batch/v1 Jobs (the integration Tauon uses). The other
# frameworks' webhooks (pods, Deployments, JobSets …) are left out: with them Kueue would sit in
# the path of every pod this cluster creates.
WEBHOOK_GROUPS = {"kueue.x-k8s.io", "batch"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def build() -> Path:
    """Builds (or finds in the cache) Kueue; returns the directory with bin/, crds/, webhook/."""
    out = subprocess.run([str(HACK / "build-kueue.sh")], check=True, stdout=subprocess.PIPE,
                         text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def version(home: Path) -> str:
    return home.name


@dataclass
class Kueue:
    cluster: Cluster
    home: Path
    webhook_port: int
    health_port: int

    @classmethod
    def start(cls, cluster: Cluster, home: Path | None = None, timeout: float = 90,
              qps: int = 100) -> "Kueue":
        """Installs Kueue's CRDs and webhooks and starts its controller (stopped with the
        cluster); returns once its webhooks answer."""
        home = home or build()
        self = cls(cluster, home, free_port(), free_port())
        state = cluster.state_dir / "kueue"
        (state / "certs").mkdir(parents=True, exist_ok=True)
        certs = pki.webhook_ca_and_serving(cluster.pki, "kueue-webhook", "kueue-ca",
                                           [f"{SERVICE}.{NAMESPACE}.svc"])
        for name, data in certs.items():  # where a pod would have its Secret mounted
            if name != "ca.key":
                (state / "certs" / name).write_bytes(data)
        ca = base64.b64encode(certs["ca.crt"]).decode()
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.apply({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v).decode() for k, v in certs.items()},
        })
        url = f"https://127.0.0.1:{self.webhook_port}"
        cluster.apply(*self._crds(url, ca))
        cluster.apply(*self._webhooks(url, ca))
        config = state / "config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port,
                        "certDir": str(state / "certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE,
                                       "webhookSecretName": SECRET},
            "clientConnection": {"qps": qps, "burst": 2 * qps},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
        }))
        cluster.spawn("kueue", [
            str(home / "bin" / "kueue"),
            f"--config={config}",
            f"--kubeconfig={cluster.kubeconfig}",
            # The on-demand visibility API is an aggregated API server: not needed here.
            "--feature-gates=VisibilityOnDemand=false",
            "--zap-log-level=2",
        ])
        self._wait_ready(timeout)
        return self

    def _crds(self, url: str, ca: str) -> list[dict]:
        out = []
        for f in sorted((self.home / "crds").glob("*.yaml")):
            crd = yaml.safe_load(f.read_text())
            if crd["spec"]["names"]["plural"] in CONVERTED:
                crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "clientConfig": {"url": f"{url}/convert", "caBundle": ca},
                    "conversionReviewVersions": ["v1"]}}
            out.append(crd)
        return out

    def _webhooks(self, url: str, ca: str) -> list[dict]:
        out = []
        for doc in yaml.safe_load_all((self.home / "webhook" / "manifests.yaml").read_text()):
            if not doc:
                continue
            kind = "mutating" if doc["kind"].startswith("Mutating") else "validating"
            doc["metadata"]["name"] = f"kueue-{kind}-webhook-configuration"
            hooks = []
            for hook in doc["webhooks"]:
                groups = {g for rule in hook["rules"] for g in rule["apiGroups"]}
                if groups <= WEBHOOK_GROUPS:
                    path = hook["clientConfig"]["service"]["path"]
                    hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca}
                    hooks.append(hook)
            doc["webhooks"] = hooks
            out.append(doc)
        return out

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = json.dumps({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                            "metadata": {"name": "readiness-probe"}})
        last = ""
        while time.monotonic() < deadline:
            self.cluster.check_alive()
            if http_ok(f"http://127.0.0.1:{self.health_port}/readyz"):
                # Ready once the API server gets through to its webhooks (a dry-run create).
                res = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                           check=False)
                if res.returncode == 0:
                    return
                last = res.stderr.strip()
            time.sleep(0.25)
        log = (self.cluster.logs / "kueue.log").read_text(errors="replace")[-3000:]
        raise ClusterError(f"Kueue did not become ready in {timeout:.0f}s ({last}); log:\n{log}")


def queue_objects(name: str, gpus: int, cpu: str = "1000", memory: str = "4Ti",
                  namespaces: tuple[str, ...] = (), preemption: bool = True) -> list[dict]:
    """A ResourceFlavor, a ClusterQueue with `gpus` nvidia.com/gpu of quota (CPU and memory
    ample) that preempts lower priorities within itself, and a LocalQueue `name` in each of
    `namespaces`."""
    cq: dict = {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [{
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                "flavors": [{"name": name, "resources": [
                    {"name": "cpu", "nominalQuota": cpu},
                    {"name": "memory", "nominalQuota": memory},
                    {"name": "nvidia.com/gpu", "nominalQuota": gpus},
                ]}],
            }],
        },
    }
    if preemption:
        cq["spec"]["preemption"] = {"withinClusterQueue": "LowerPriority"}
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
              "metadata": {"name": name}}
    return [flavor, cq, *(local_queue(name, ns, name) for ns in namespaces)]


def local_queue(name: str, namespace: str, cluster_queue: str) -> dict:
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue}}
