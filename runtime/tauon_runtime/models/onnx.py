"""The edge export: `model.onnx` beside the safetensors, checked against PyTorch before it is kept.

The graph takes what the server receives (float32 [N, C, H, W] on the 0..255 pixel scale, any N)
and returns logits: the card's normalisation is inside it, so an edge client needs nothing but
the file. torch.onnx's exporter from torch.export (``dynamo=True``) is tried first, the
TorchScript exporter second; onnxruntime then runs the check split (the test split at training
time) and the export is kept only if its logits are within tolerance of PyTorch's and its
predictions agree. A model that cannot be exported, or fails the check, gets no ONNX file and a
card that says why: the edge export never fails training.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 18
MIN_AGREEMENT = 0.999  # predictions equal to PyTorch's on the check split
ATOL, RTOL = 1e-4, 1e-4  # |onnx - torch| <= ATOL + RTOL * max|torch| over every logit
CHECK_BATCH = 256
INPUT, OUTPUT = "input", "logits"

__all__ = ["MIN_AGREEMENT", "OPSET", "export_onnx"]


class Normalized(nn.Module):
    """``model((x / scale - mean) / std)``: pixels in, logits out."""

    mul: torch.Tensor
    sub: torch.Tensor

    def __init__(self, model: nn.Module, preprocessing: dict[str, Any], channels: int) -> None:
        super().__init__()
        std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, channels, 1, 1)
        mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, channels, 1, 1)
        scale = float(preprocessing.get("scale", 255.0))
        self.register_buffer("mul", 1.0 / (scale * std))
        self.register_buffer("sub", mean / std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.mul - self.sub)


def _export(module: nn.Module, example: torch.Tensor, path: Path, exporter: str) -> None:
    # torch.onnx reports progress on stdout, where the runtime's structured events go.
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=OPSET,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=OPSET,
            )


def _check(module: nn.Module, path: Path, inputs: np.ndarray) -> dict[str, Any]:
    """Run PyTorch and onnxruntime on the same inputs; how far apart and how often they agree."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst, scale, agree = 0.0, 0.0, 0
    for start in range(0, len(inputs), CHECK_BATCH):
        x = inputs[start : start + CHECK_BATCH]
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        got = session.run([OUTPUT], {INPUT: x})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
    return {
        "maxAbsDiff": float(f"{worst:.3g}"),
        "agreement": round(agree / len(inputs), 6),
        "samples": len(inputs),
        "tolerance": float(f"{ATOL + RTOL * scale:.3g}"),
    }


def export_onnx(
    module: nn.Module,
    card: dict[str, Any],
    path: Path,
    check_inputs: np.ndarray | None = None,
    check_split: str = "test",
) -> dict[str, Any]:
    """Write ``path`` and return the card's ``onnx`` entry; on failure remove it and return
    ``{"file": None, "reason": ...}``. ``module`` is a plain CPU module in eval mode;
    ``check_inputs`` are samples on the 0..255 scale (random ones when there are none)."""
    c, h, w = (int(d) for d in card["inputShape"])
    if check_inputs is None or len(check_inputs) == 0:
        rng = np.random.default_rng(0)
        check_inputs, check_split = rng.uniform(0, 255, (64, c, h, w)), "random"
    inputs = np.ascontiguousarray(check_inputs, dtype=np.float32)
    wrapped = Normalized(module, card["preprocessing"], c).eval()
    example = torch.from_numpy(inputs[:2] if len(inputs) >= 2 else np.repeat(inputs, 2, axis=0))
    failures = []
    started = time.perf_counter()
    for exporter in ("dynamo", "torchscript"):
        try:
            _export(wrapped, example, path, exporter)
            check = _check(wrapped, path, inputs)
        except Exception as e:  # an exporter's or onnxruntime's own error types, many of them
            log.warning("ONNX export with the %s exporter failed: %s", exporter, e)
            failures.append(f"{exporter} exporter: {type(e).__name__}: {str(e)[:300]}")
            continue
        ok = check["maxAbsDiff"] <= check["tolerance"] and check["agreement"] >= MIN_AGREEMENT
        if ok:
            return {
                "file": path.name,
                "sha256": _sha256(path),
                "opset": OPSET,
                "exporter": exporter,
                "input": {
                    "name": INPUT,
                    "shape": [-1, c, h, w],
                    "scale": "0..255 pixels"
                    if float((card.get("preprocessing") or {}).get("scale", 255.0)) == 255.0
                    else "features as they are",
                },
                "output": {"name": OUTPUT, "shape": [-1, int(card["numClasses"])]},
                "split": check_split,
                **check,
                "seconds": round(time.perf_counter() - started, 2),
            }
        failures.append(
            f"{exporter} exporter: max abs diff {check['maxAbsDiff']} (tolerance "
            f"{check['tolerance']}), agreement {check['agreement']} (at least {MIN_AGREEMENT})"
        )
    path.unlink(missing_ok=True)
    return {"file": None, "reason": "; ".join(failures)}


def _sha256(path: Path) -> str:
    from tauon_runtime.modelfiles import sha256_hex

    return sha256_hex(path.read_bytes())
