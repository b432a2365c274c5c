"""`tauon-runtime prepare|train|serve|fetch`: the runtime image's one entry point.

The run config comes from `--config PATH`, else env TAUON_RUN_CONFIG (a path), else env
TAUON_RUN_CONFIG_JSON (inline JSON). Progress goes to stdout as one JSON object per line.

`fetch --uri URI --sha256 DIGEST --dest DIR` is the serving pod's storage initializer: it
downloads a published model version (s3:// or https://) and verifies every file.

Exit codes: 0 success; 1 failure (data, integrity, training, an unreachable store); 2 invalid
config or usage; 3 model rejected by `evaluation.minimum` (prepare/train), refused by serve, or
not the published digest (fetch).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from tauon_runtime.contract.keys import ExitCode

_COMMANDS = {
    "prepare": "fetch, verify, split and describe a Dataset into a versioned layout",
    "train": "train a model (one process or DDP under torchrun), checkpoint, evaluate, export",
    "serve": "serve an exported model over HTTP (Open Inference Protocol v2, /v1/predict)",
    "fetch": "download a published model version (s3:// or https://), verifying every file",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tauon-runtime",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{prepare,train,serve,fetch}"
    )
    for name, text in _COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "fetch":
            p.add_argument("--uri", required=True, help="s3://<bucket>/<key>/ or https://...")
            p.add_argument("--sha256", required=True, help="the weights' digest to accept")
            p.add_argument("--dest", required=True, metavar="DIR", help="directory to fill")
            continue
        p.add_argument(
            "--config",
            metavar="PATH",
            help="run config, JSON or YAML (default: $TAUON_RUN_CONFIG or $TAUON_RUN_CONFIG_JSON)",
        )
    return parser


def _run(command: str, config_path: str | None) -> int:
    # Imports live here: `--help` and config errors answer without loading torch.
    from tauon_runtime.config import ConfigError, PrepareConfig, TrainConfig, load_config
    from tauon_runtime.report import Reporter, StatusReporter, write_termination_log

    try:
        kind: type[PrepareConfig | TrainConfig] = (
            PrepareConfig if command == "prepare" else TrainConfig
        )
        cfg: Any = load_config(kind, config_path)
        if command == "train" and cfg.model is None:
            raise ConfigError(
                "model: required by `tauon-runtime train` (a built-in network); a TrainingJob "
                "without spec.model runs its own spec.command, with tauon_runtime.sdk"
            )
    except ConfigError as e:
        print(f"tauon-runtime {command}: {e}", file=sys.stderr)
        write_termination_log(
            {"event": "error", "result": "failed", "error": "InvalidConfig", "message": str(e)}
        )
        return ExitCode.INVALID_CONFIG
    try:
        if command == "prepare":
            from tauon_runtime.data.prepare import FINISHED_FIELDS, prepare, status_patch

            reporter = Reporter(status=StatusReporter.from_env(), status_for=status_patch)
            try:
                result = prepare(cfg, reporter)
            finally:
                reporter.close()
            write_termination_log(
                {
                    "event": "finished",
                    "result": "succeeded",
                    **{k: result[k] for k in FINISHED_FIELDS if k in result and k != "classes"},
                }
            )
        else:
            from tauon_runtime.train import ModelRejected, train

            try:
                result = train(cfg)
            except ModelRejected as e:
                print(f"tauon-runtime train: {e}", file=sys.stderr)
                write_termination_log({"event": "finished", **e.result, "message": str(e)})
                return ExitCode.REJECTED
            write_termination_log({"event": "finished", **result})
        return ExitCode.OK
    except Exception as e:
        reason = type(e).__name__
        print(f"tauon-runtime {command}: {reason}: {e}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        write_termination_log(
            {"event": "error", "result": "failed", "error": reason, "message": str(e)}
        )
        return ExitCode.FAILED


def _fetch(uri: str, sha256: str, dest: str) -> int:
    """The storage initializer: a mismatch or a missing version is permanent (3), an
    unreachable store is retried by the kubelet (1); the reason goes to the termination log."""
    from pathlib import Path

    from tauon_runtime.report import write_termination_log
    from tauon_runtime.store import ChecksumMismatch, NotPublished, StoreError, fetch_uri

    try:
        manifest = fetch_uri(uri, Path(dest), sha256)
    except (StoreError, ValueError) as e:
        reason = e.reason if isinstance(e, StoreError) else "InvalidModelURI"
        print(f"tauon-runtime fetch: {reason}: {e}", file=sys.stderr)
        write_termination_log(
            {"event": "error", "result": "failed", "error": reason, "message": str(e)}
        )
        permanent = isinstance(e, ChecksumMismatch | NotPublished | ValueError)
        return ExitCode.REJECTED if permanent else ExitCode.FAILED
    files = manifest["files"]
    print(f"tauon-runtime fetch: {uri} -> {dest}: {len(files)} files verified, sha256 {sha256}")
    write_termination_log({"event": "fetched", "result": "succeeded", "sha256": sha256})
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":  # the serve package owns its arguments
        from tauon_runtime.serve import main as serve_main

        return serve_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        return _fetch(args.uri, args.sha256, args.dest)
    return _run(args.command, args.config)


if __name__ == "__main__":
    sys.exit(main())
