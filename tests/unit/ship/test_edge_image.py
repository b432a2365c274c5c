"""The runtime-edge image's Python environment, built without an engine: docker/install.sh edge
(the script the Dockerfile runs) into a fresh venv. Proves the lock is complete (pip check),
that torch is not there, and that this environment serves a real ONNX export end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from localkube.procutil import free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[3]
MAX_EDGE_MB = 400  # the runtime's torch set is several GB; the edge must stay small

pytestmark = pytest.mark.timeout(900)


def run(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("edge-image")
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "--wheel-dir", tmp / "wheels", ROOT)
    assert built.returncode == 0, built.stderr
    env = {**clean_env(), "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    installed = run(ROOT / "docker" / "install.sh", "edge", tmp / "venv", tmp / "wheels", env=env)
    if installed.returncode != 0 and "No matching distribution" in installed.stdout + installed.stderr:
        pytest.skip("no package index reachable")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return tmp / "venv"


def test_the_edge_environment_has_no_torch_and_is_small(edge_venv):
    py = edge_venv / "bin" / "python"
    assert run(py, "-c", "import torch", env=clean_env(), cwd="/").returncode != 0
    listed = run(py, "-c", "import importlib.metadata as m; print('\\n'.join(sorted(d.name for d in m.distributions())))",
                 env=clean_env(), cwd="/")
    names = set(listed.stdout.split())
    assert "onnxruntime" in names and "tauon" in names
    assert not {"torch", "torchvision", "triton", "sympy"} & names
    assert not [n for n in names if n.startswith("nvidia")]
    size_mb = tree_bytes(edge_venv) / 2**20
    print(f"runtime-edge environment: {size_mb:.0f} MiB, {len(names)} distributions")
    assert size_mb < MAX_EDGE_MB
    assert not (edge_venv / "bin" / "pip").exists()


def test_the_edge_environment_serves_an_onnx_export(edge_venv, tmp_path):
    import torch

    from tauon_runtime.models import build_model, export_model

    torch.manual_seed(0)
    pre = {"scale": 255.0, "mean": [0.3], "std": [0.3]}
    card = {"name": "edge", "architecture": "cnn", "modelOptions": {"width": 8, "hidden": 32},
            "numClasses": 10, "classes": [str(i) for i in range(10)], "inputShape": [1, 8, 8],
            "preprocessing": pre}
    net = build_model("cnn", 10, 1, 8, card["modelOptions"]).eval()
    x = np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8)).astype(np.float32)
    card = export_model(net, tmp_path / "model", card, check_inputs=x)
    assert card["onnx"]["file"] == "model.onnx", card["onnx"]
    with torch.inference_mode():
        want = net((torch.from_numpy(x) / 255.0 - 0.3) / 0.3).argmax(1).tolist()

    port = free_port()
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"modelName": "edge", "modelDir": str(tmp_path / "model"),
                               "modelFormat": "onnx", "expectedSha256": card["sha256"],
                               "host": "127.0.0.1", "port": port, "drainSeconds": 0}))
    proc = subprocess.Popen([edge_venv / "bin" / "tauon-runtime", "serve", "--config", cfg],
                            env=clean_env(), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_url(f"http://127.0.0.1:{port}/v2/health/ready", 60, proc=proc)
        except (ChildProcessError, TimeoutError):
            proc.kill()
            pytest.fail(proc.stdout.read().decode()[-3000:])
        body = json.dumps({"inputs": [{"name": "input", "shape": [40, 1, 8, 8], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/edge/infer", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            outputs = {o["name"]: o for o in json.loads(r.read())["outputs"]}
        assert outputs["labels"]["data"] == [str(k) for k in want]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
