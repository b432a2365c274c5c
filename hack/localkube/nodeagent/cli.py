"""`python -m localkube.nodeagent`: the command line that starts the agent."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from localkube.nodeagent.agent import NodeAgent
from localkube.nodeagent.config import AgentConfig


def _kv(items: list[str]) -> dict[str, str]:
    return dict(i.split("=", 1) for i in items)


def _taint(s: str) -> dict:
    kv, _, effect = s.partition(":")
    key, _, value = kv.partition("=")
    t = {"key": key, "effect": effect or "NoSchedule"}
    if value:
        t["value"] = value
    return t


def main(argv: list[str] | None = None) -> None:
    from localkube import nodeagent  # its docstring is the --help text

    ap = argparse.ArgumentParser(prog="python -m localkube.nodeagent",
                                 description=nodeagent.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--name", default="local-agent")
    ap.add_argument("--cpu", default="", help="cpu capacity (default: this machine's CPUs)")
    ap.add_argument("--memory", default="", help="memory capacity (default: MemTotal)")
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu to advertise")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--taint", action="append", default=[], metavar="KEY[=VALUE]:EFFECT")
    ap.add_argument("--image-env", action="append", default=[], metavar="KEY=VALUE",
                    help="env every container starts with (the 'image' ENV)")
    ap.add_argument("--image-path", action="append", default=[], metavar="PATH",
                    help="a host path every container sees, read-only (the 'image' files)")
    ap.add_argument("--port", type=int, default=0, help="kubelet HTTPS port (default: any)")
    ap.add_argument("--serving-cert", default="")
    ap.add_argument("--serving-key", default="")
    ap.add_argument("--client-ca", default="", help="CA that signs the API server's client cert")
    ap.add_argument("--backoff", type=float, default=1.0, help="first restart back-off (s)")
    ap.add_argument("--backoff-max", type=float, default=60.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The venv's real bin/ (its link may sit under a path a pod volume covers, such as /tmp).
    venv_bin = os.path.realpath(Path(sys.executable).parent)
    image_env = {"PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", **_kv(args.image_env)}
    cfg = AgentConfig(name=args.name, kubeconfig=args.kubeconfig, state_dir=args.state_dir.resolve(),
                      cpu=args.cpu, memory=args.memory, pods=args.pods, gpus=args.gpus,
                      labels=_kv(args.label), taints=[_taint(t) for t in args.taint],
                      image_env=image_env, image_paths=args.image_path,
                      port=args.port, serving_cert=args.serving_cert,
                      serving_key=args.serving_key, client_ca=args.client_ca,
                      backoff_base=args.backoff, backoff_max=args.backoff_max)
    agent = NodeAgent(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopped.set())
    agent.run()
