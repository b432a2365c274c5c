"""`tauon-runtime serve`: the inference server.

Listens at once (liveness answers while the model loads), loads and verifies the exported model
(a sha256 mismatch exits non-zero and readiness never turns true), warms it up, then reports
ready. SIGTERM turns readiness off, keeps answering for drainSeconds, then stops accepting
connections, answers what is queued, exits 0.

With ``modelFormat: onnx`` the model runs in onnxruntime and nothing imports torch (the
runtime-edge image has none); with ``safetensors`` (the default) it runs in PyTorch.

Exit codes (those of `tauon-runtime`): 0 clean shutdown, 1 the model could not be loaded,
2 invalid config, 3 the model was refused (its sha256 does not match).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from tauon_runtime.contract.keys import ExitCode

__all__ = ["main", "serve"]

log = logging.getLogger("tauon_runtime.serve")


async def serve(config, *, stop: asyncio.Event | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set); return the exit code."""
    from aiohttp import web

    from tauon_runtime.modelfiles import ModelIntegrityError
    from tauon_runtime.report import Reporter, write_termination_log

    from .app import STATE, activate, create_app, make_runner
    from .model import ServedModel

    try:
        app = create_app(config)
    except (ValueError, OSError) as e:  # e.g. feedback enabled without a path, unwritable volume
        log.error("cannot start: %s", e)
        write_termination_log(
            {"event": "error", "result": "failed", "error": "InvalidConfig", "message": str(e)}
        )
        return ExitCode.INVALID_CONFIG
    runner = make_runner(
        app, access_log=None, shutdown_timeout=min(30.0, config.request_timeout_seconds)
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    try:
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, e)
        write_termination_log(
            {"event": "error", "result": "failed", "error": "ListenFailed", "message": str(e)}
        )
        await runner.cleanup()
        return ExitCode.FAILED
    log.info(
        "listening on http://%s:%d (not ready until model %s is loaded)",
        config.host,
        config.port,
        config.model_name,
    )

    reporter = Reporter()
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    try:
        model: ServedModel
        if config.predictor is not None:  # a user's class (spec.predictor)
            from .custom import CustomModel

            model = await loop.run_in_executor(
                None,
                CustomModel.load_predictor,
                config.model_dir,
                config.model_name,
                config.expected_sha256,
                config.predictor.class_name,
                config.predictor.code_dir,
            )
        else:
            model = await loop.run_in_executor(
                None,
                ServedModel.load,
                config.model_dir,
                config.model_name,
                config.expected_sha256,
                config.device,
                config.model_format,
            )
        await activate(app, model)
    except Exception as e:
        reason = "ModelIntegrity" if isinstance(e, ModelIntegrityError) else "ModelLoadFailed"
        if isinstance(e, ModelIntegrityError):
            log.error("refusing to serve model %s: %s", config.model_name, e)
        else:
            log.exception("cannot load model %s from %s", config.model_name, config.model_dir)
        result = reporter.event(
            "error", command="serve", result="failed", error=reason, message=str(e)
        )
        write_termination_log(result)
        await runner.cleanup()
        return ExitCode.REJECTED if isinstance(e, ModelIntegrityError) else ExitCode.FAILED
    served = app[STATE].model
    assert served is not None  # activate() set it
    reporter.event(
        "ready",
        command="serve",
        model=config.model_name,
        sha256=served.digest,
        architecture=served.architecture,
        format=served.format,
        device=str(served.device),
        port=config.port,
    )
    await stop.wait()
    app[
        STATE
    ].draining = True  # readiness fails first: endpoints drop this pod while it still answers
    if config.drain_seconds:
        await asyncio.sleep(config.drain_seconds)
    reporter.event("finished", command="serve", result="stopped")
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tauon-runtime serve [--config PATH]`; returns the exit code."""
    from tauon_runtime.config import ConfigError, ServeConfig, load_config

    parser = argparse.ArgumentParser(
        prog="tauon-runtime serve", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--config",
        help="run config file (JSON or YAML); default: $TAUON_RUN_CONFIG or $TAUON_RUN_CONFIG_JSON",
    )
    # Overrides for what a pod knows only at start: its own address (the downward API's
    # status.podIP) and port.
    parser.add_argument("--host", help="address to listen on (overrides the config's host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides the config's port)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    try:
        config = load_config(ServeConfig, args.config)
    except ConfigError as e:
        from tauon_runtime.report import write_termination_log

        print(f"tauon-runtime serve: {e}", file=sys.stderr)
        write_termination_log(
            {"event": "error", "result": "failed", "error": "InvalidConfig", "message": str(e)}
        )
        return ExitCode.INVALID_CONFIG
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        config = config.model_copy(update=overrides)
    return asyncio.run(serve(config))
