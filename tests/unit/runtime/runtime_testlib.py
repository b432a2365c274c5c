"""Helpers shared by the runtime's unit tests (imported by name: conftest is not a module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from localkube.procutil import free_port  # noqa: F401 - the tests import it from here

RUNTIME_ENV = {
    # One thread per process: runs are reproducible and two processes do not fight over 2 cores.
    "OMP_NUM_THREADS": "1",
    "GLOO_SOCKET_IFNAME": "lo",
    "PYTHONUNBUFFERED": "1",
}


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
            launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m tauon_runtime ARGS` (or under `launcher`, e.g. torchrun) in a fresh process."""
    src = str(Path(__file__).resolve().parents[3] / "runtime")  # this checkout, as in conftest
    pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, **RUNTIME_ENV, "PYTHONPATH": pythonpath, **(env or {})}
    cmd = [*(launcher or [sys.executable, "-m", "tauon_runtime"]), *args]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def digits_train_config(digits_dir: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The seed's recipe on digits: the small CNN, AdamW, cosine, 15 epochs."""
    cfg: dict[str, Any] = {
        "model": {"architecture": "cnn"},
        "hyperparameters": {"epochs": 15, "batchSize": 64, "learningRate": 0.002, "seed": 0},
        "datasetDir": str(digits_dir),
        "outputDir": str(output_dir),
        "device": "cpu",
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    return cfg
