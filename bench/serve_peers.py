"""The serving peers of bench/serve_throughput.py (`--peers kserve,litserve`), and the ceiling.

Each peer serves the same exported model (the same safetensors, loaded by the same
`tauon_runtime.models.load_exported`, the same torch build) the way its documentation says a
custom PyTorch model is served (bench/peers/*_server.py), in its own environment
(hack/setup-serve-peers.sh). The request bodies are byte-for-byte the ones `tauon-runtime serve`
gets on the matching endpoint:

  kserve    OIP v2 REST   POST /v2/models/bench/infer   the same body as Tauon's v2 endpoint;
            no batching: KServe's Python server has no batcher (KServe batches in its Go
            agent sidecar, v1 protocol only)
  litserve  POST /predict  the same body as Tauon's /v1/predict; batching on, with Tauon's
            max batch and delay

The ceiling is the model alone: the batched forward pass in a loop in this process, no HTTP.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PEERS = ("kserve", "litserve")
ENDPOINT = {"kserve": "v2", "litserve": "predict"}  # the Tauon endpoint with the same body


@dataclass
class Peer:
    name: str
    python: str


def setup(names: list[str]) -> dict[str, Peer]:
    out = subprocess.run([str(REPO / "hack" / "setup-serve-peers.sh"), *names], check=True,
                         capture_output=True, text=True)
    peers = {}
    for line in out.stdout.splitlines():
        name, python = line.split(maxsplit=1)
        peers[name] = Peer(name, python)
    return peers


def command(peer: Peer, model_dir: Path, port: int, max_batch: int, max_latency_ms: float) -> tuple[list[str], str, str]:
    """(argv, readiness URL path, request path) for one peer server."""
    if peer.name == "kserve":
        return ([peer.python, str(REPO / "bench" / "peers" / "kserve_server.py"), "--model-dir",
                 str(model_dir), "--model-name", "bench", f"--http_port={port}", "--workers=1"],
                "/v2/health/ready", "/v2/models/bench/infer")
    return ([peer.python, str(REPO / "bench" / "peers" / "litserve_server.py"), "--model-dir",
             str(model_dir), "--port", str(port), "--max-batch-size", str(max_batch),
             "--batch-timeout-ms", str(max_latency_ms)], "/health", "/predict")


def model_only(model_dir: Path, batch: int, seconds: float = 3.0, device: str = "cpu") -> float:
    """Samples per second of the batched forward pass alone (the serving ceiling)."""
    sys.path.insert(0, str(REPO / "runtime"))
    from tauon_runtime.serve.model import ServedModel

    served = ServedModel.load(str(model_dir), "bench", device=device)
    x = np.random.default_rng(0).integers(0, 256, (batch, *served.chw)).astype(np.float32)
    for _ in range(3):
        served.forward(x)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        served.forward(x)
        n += batch
    return n / (time.perf_counter() - started)
