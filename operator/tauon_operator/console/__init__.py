"""The platform console: `tauon-operator console` serves pages of the Datasets, TrainingJobs and
ModelDeployments its ServiceAccount may read (read-only RBAC, its own Deployment in the chart),
updating live, and relays "Try it" predictions and feedback to a model's Service."""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web


def main(argv: list[str] | None = None) -> int:
    from tauon_operator.console.app import Config, make_app
    from tauon_operator.kube import Kube

    parser = argparse.ArgumentParser(prog="tauon-operator console", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("TAUON_CONSOLE_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("TAUON_CONSOLE_PORT", 8090)))
    parser.add_argument(
        "--namespace",
        default=os.environ.get("TAUON_CONSOLE_NAMESPACE", "default"),
        help="the namespace shown first",
    )
    parser.add_argument(
        "--namespaces",
        default=os.environ.get("TAUON_NAMESPACES", ""),
        help="comma-separated namespaces to offer (default: every one with Tauon objects)",
    )
    parser.add_argument(
        "--serve-port", type=int, default=int(os.environ.get("TAUON_SERVE_PORT", 8080))
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    namespaces = tuple(n for n in args.namespaces.split(",") if n)
    config = Config(args.namespace, namespaces, args.serve_port)
    web.run_app(
        make_app(Kube.from_environment(), config),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )
    return 0
