"""`make demo`: start the platform on this machine and show it working.

Starts the real control plane (kube-apiserver, controller-manager, scheduler, etcd) with kwok
simulating GPU nodes, installs Tauon's CRDs and shows the cluster. Leaves it running so you can
look around; `make cluster-down` stops it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from localkube import Cluster, ClusterError
from localkube.cluster import REPO, gpu_nodes

STATE = REPO / ".tauon" / "cluster"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    t0 = time.monotonic()
    if (STATE / "cluster.json").exists() and Cluster.attach(STATE).info.get("pids"):
        step("stopping the cluster left by an earlier demo")
        Cluster.attach(STATE).stop()
    step("starting a real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, "
         "kube-controller-manager, kube-scheduler, kwok)")
    try:
        cluster = Cluster.start(STATE, nodes=gpu_nodes(4))
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"up in {cluster.info['started_seconds']}s at {cluster.server}")

    crds = sorted((REPO / "crds").glob("*.yaml"))
    step(f"installing Tauon's CRDs ({len(crds)})")
    for f in crds:
        print(cluster.kubectl("apply", "--server-side", "-f", str(f)).stdout.strip())

    step("the simulated GPU nodes")
    print(cluster.kubectl("get", "nodes").stdout)
    print(cluster.kubectl("get", "nodes", "-o", "custom-columns=NAME:.metadata.name,"
                          "GPUS:.status.allocatable.nvidia\\.com/gpu,CPU:.status.allocatable.cpu,"
                          "MEMORY:.status.allocatable.memory").stdout)

    step(f"done in {time.monotonic() - t0:.0f}s — the cluster keeps running:")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print("  kubectl get nodes; kubectl get crds")
    print("  make cluster-down    # stop it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
