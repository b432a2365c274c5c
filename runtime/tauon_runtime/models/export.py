"""Exported models: safetensors weights plus a JSON model card, verified before loading.

<outputDir>/model/
  model.safetensors   the state_dict (no pickle: weights only)
  model.json          the model card; its `sha256` is the digest of model.safetensors
  model.onnx          the edge export, when the architecture allows it (models.onnx)
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from tauon_runtime.modelfiles import CARD, ONNX, WEIGHTS, ModelIntegrityError, sha256_hex
from tauon_runtime.modelfiles import read_verified as _read_verified
from tauon_runtime.models.zoo import build_model

__all__ = [
    "CARD",
    "ONNX",
    "WEIGHTS",
    "ModelIntegrityError",
    "clean_state_dict",
    "export_model",
    "load_exported",
    "normalize_input",
    "sha256_hex",
    "unwrap",
]
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment] # torch.compile's wrapper
        else:
            return model


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes and make every tensor a contiguous, unshared CPU copy."""
    out = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value.detach().to("cpu", copy=True).contiguous()
    return out


def export_model(
    model: nn.Module,
    model_dir: str | Path,
    card: dict[str, Any],
    check_inputs: np.ndarray | torch.Tensor | None = None,
    check_split: str = "test",
    onnx: bool = True,
) -> dict[str, Any]:
    """Write weights, card (and the ONNX export) into `model_dir`, replacing it atomically;
    return the full card. `check_inputs` (0..255 scale) are what the ONNX export is checked on."""
    model_dir = Path(model_dir)
    state = clean_state_dict(unwrap(model).state_dict())
    payload = save_safetensors(state)
    card = {
        **card,
        "sha256": sha256_hex(payload),
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "framework": {"torch": torch.__version__},
    }
    stage = model_dir.with_name(f".{model_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (stage / WEIGHTS).write_bytes(payload)
    if onnx:
        card["onnx"] = _edge_export(state, card, stage / ONNX, check_inputs, check_split)
    (stage / CARD).write_text(json.dumps(card, indent=2) + "\n")
    # A directory cannot be os.replace'd over a non-empty one: move the old one aside first.
    old = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
    if model_dir.exists():
        os.replace(model_dir, old)
    os.replace(stage, model_dir)
    shutil.rmtree(old, ignore_errors=True)
    return card


def _edge_export(
    state: dict[str, torch.Tensor],
    card: dict[str, Any],
    path: Path,
    check_inputs: np.ndarray | torch.Tensor | None,
    check_split: str,
) -> dict[str, Any]:
    """The card's `onnx` entry: exported from a fresh CPU copy of the model (what a server
    loads, not the training module with its device, memory format or compile wrapper)."""
    try:
        from tauon_runtime.models.onnx import export_onnx

        c, h, _ = card["inputShape"]
        fresh = build_model(
            card["architecture"], card["numClasses"], c, h, card.get("modelOptions") or {}
        )
        fresh.load_state_dict(state)
        if isinstance(check_inputs, torch.Tensor):
            check_inputs = check_inputs.cpu().numpy()
        return export_onnx(fresh.eval(), card, path, check_inputs, check_split)
    except Exception as e:  # the edge export must never fail training
        path.unlink(missing_ok=True)
        return {"file": None, "reason": f"{type(e).__name__}: {str(e)[:300]}"}


def load_exported(
    model_dir: str | Path,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported model in eval mode, after checking its sha256.

    The weights are read once, hashed, compared with the card's `sha256` and with
    `expected_sha256` (when given), and only then deserialized from the same bytes.
    """
    card, payload = _read_verified(model_dir, expected_sha256)
    if card.get("task") == "custom":
        raise ValueError(
            f"the model in {model_dir} was exported by its own training code "
            "(tauon_runtime.sdk): serve it through its predictor class (ModelDeployment "
            "spec.predictor)"
        )
    c, h, _ = card["inputShape"]
    model = build_model(
        card["architecture"], card["numClasses"], c, h, card.get("modelOptions") or {}
    )
    model.load_state_dict(load_safetensors(payload))
    return model.to(map_location).eval(), card


def normalize_input(x: torch.Tensor, card: dict[str, Any]) -> torch.Tensor:
    """Pixel values on a 0..255 scale, [N, C, H, W] -> what the model expects."""
    p = card["preprocessing"]
    shape = (1, -1, 1, 1)
    mean = torch.tensor(p["mean"], dtype=torch.float32, device=x.device).view(shape)
    std = torch.tensor(p["std"], dtype=torch.float32, device=x.device).view(shape)
    return (x.float() / float(p.get("scale", 255.0)) - mean) / std
