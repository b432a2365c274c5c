"""The operator image's Python environment, built without an engine: docker/install.sh (the
script the Dockerfile runs) into a fresh venv, then the entry points. Proves the lock is
complete (pip check), that the operator imports without torch, and that both commands start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("image")
    # The build stage: the project's wheel, nothing else.
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "--wheel-dir", tmp / "wheels", ROOT)
    assert built.returncode == 0, built.stderr
    # The operator stage, verbatim. Same interpreter version as the image's base.
    env = {**os.environ, "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    env.pop("PYTHONPATH", None)  # nothing of this checkout may leak in: only what was installed
    installed = run(ROOT / "docker" / "install.sh", "operator", tmp / "venv", tmp / "wheels", env=env)
    if installed.returncode != 0 and "No matching distribution" in installed.stdout + installed.stderr:
        pytest.skip("no package index reachable")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return tmp / "venv"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.mark.parametrize("command, expected", [
    (["tauon-operator", "--help"], "usage: tauon-operator"),
    (["tauon-runtime", "--help"], "usage: tauon-runtime"),
])
def test_entry_points_answer_help(operator_venv, command, expected):
    out = run(operator_venv / "bin" / command[0], *command[1:], env=clean_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout


def test_operator_imports_everything_it_runs_with_and_no_torch(operator_venv):
    code = ("import sys, tauon_operator.main, tauon_operator.handlers.watch, tauon_runtime.config;"
            "import tauon_operator, tauon_runtime;"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules;"
            "print(tauon_operator.__file__)")
    out = run(operator_venv / "bin" / "python", "-c", code, env=clean_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    assert str(operator_venv) in out.stdout  # the installed package, not this checkout
    assert run(operator_venv / "bin" / "python", "-c", "import torch", env=clean_env()).returncode != 0


def test_no_installer_is_left_in_the_environment(operator_venv):
    assert not (operator_venv / "bin" / "pip").exists()
    out = run(operator_venv / "bin" / "python", "-c", "import pip", env=clean_env(), cwd="/")
    assert out.returncode != 0
