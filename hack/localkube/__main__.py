"""`python -m localkube up|down|status`: the control plane for `make cluster-up/down`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from localkube.cluster import Cluster, ClusterError, NodeAgentSpec, gpu_nodes

DEFAULT_STATE = Path(os.environ.get("TAUON_CLUSTER_DIR", Path.cwd() / ".tauon" / "cluster"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="localkube", description=__doc__)
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    ap.add_argument("--nodes", type=int, default=4, help="kwok GPU nodes (default 4)")
    ap.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node (default 8)")
    ap.add_argument("--agent", action="store_true",
                    help="also start the local node agent (node local-agent): its pods run here")
    args = ap.parse_args(argv)
    state = args.state_dir.resolve()
    try:
        if args.command == "up":
            if (state / "cluster.json").exists() and Cluster.attach(state).info.get("pids"):
                print(f"a cluster is already running in {state}; `make cluster-down` first",
                      file=sys.stderr)
                return 1
            cluster = Cluster.start(state, nodes=gpu_nodes(args.nodes, args.gpus),
                                    agent=NodeAgentSpec() if args.agent else None)
            print(f"control plane up in {cluster.info['started_seconds']}s at {cluster.server}",
                  file=sys.stderr)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            if (state / "cluster.json").exists():
                Cluster.attach(state).stop()
            print("control plane stopped", file=sys.stderr)
        else:
            print(Cluster.attach(state).kubectl("get", "nodes", "-o", "wide").stdout)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
