"""`tauon-operator`: run the operator, or regenerate the CRDs from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _repo_root() -> Path:
    # operator/tauon_operator/__main__.py -> the checkout's root.
    return Path(__file__).resolve().parents[2]


def _crds(args: argparse.Namespace) -> int:
    from .api import crdgen

    root = Path(args.root) if args.root else _repo_root()
    if args.check:
        problems = crdgen.drift(root)
        for problem in problems:
            sys.stdout.write(problem)
        if problems:
            print("CRDs are out of date: run `tauon-operator crds`", file=sys.stderr)
            return 1
        print("CRDs are up to date")
        return 0
    for path in crdgen.write(root):
        print(path.relative_to(root))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tauon-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="regenerate crds/ and charts/tauon/crds/ from the models")
    crds.add_argument("--check", action="store_true", help="exit 1 if the files differ")
    crds.add_argument("--root", help="repository root (default: this checkout)")
    crds.set_defaults(func=_crds)

    # Listed for --help; `run` and `console` parse their own flags (`tauon-operator run --help`).
    sub.add_parser("run", help="run the operator", add_help=False)
    sub.add_parser("console", help="serve the web console", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        # Imported lazily: `crds` must work without kopf's import cost.
        from . import main as operator_main

        return operator_main.run(argv[1:]) or 0
    if argv[:1] == ["console"]:
        from . import console

        return console.main(argv[1:])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
