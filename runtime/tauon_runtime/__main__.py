"""`tauon-runtime prepare|train|serve [--config PATH]`: the runtime image's one entry point.

The run config comes from `--config PATH`, else env TAUON_RUN_CONFIG (a path), else env
TAUON_RUN_CONFIG_JSON (inline JSON). Progress goes to stdout as one JSON object per line.

Exit codes: 0 success; 1 failure (data, integrity, training); 2 invalid config or usage;
3 model rejected by `evaluation.minimum` (prepare/train) or refused by serve.
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
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tauon-runtime",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{prepare,train,serve}")
    for name, text in _COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
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
    except ConfigError as e:
        print(f"tauon-runtime {command}: {e}", file=sys.stderr)
        write_termination_log(
            {"event": "error", "result": "failed", "error": "InvalidConfig", "message": str(e)}
        )
        return ExitCode.INVALID_CONFIG
    try:
        if command == "prepare":
            from tauon_runtime.data.prepare import prepare, status_patch

            reporter = Reporter(status=StatusReporter.from_env(), status_for=status_patch)
            try:
                result = prepare(cfg, reporter)
            finally:
                reporter.close()
            write_termination_log(
                {
                    "event": "finished",
                    "result": "succeeded",
                    **{
                        k: result[k]
                        for k in ("digest", "counts", "numClasses", "shape", "bytes", "path")
                    },
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":  # the serve package owns its arguments
        from tauon_runtime.serve import main as serve_main

        return serve_main(argv[1:])
    args = _parser().parse_args(argv)
    return _run(args.command, args.config)


if __name__ == "__main__":
    sys.exit(main())
