"""Exported models: safetensors weights plus a JSON model card, verified before loading.

<outputDir>/model/
  model.safetensors   the state_dict (no pickle: weights only)
  model.json          the model card; its `sha256` is the digest of model.safetensors
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from tauon_runtime.models.zoo import build_model

WEIGHTS = "model.safetensors"
CARD = "model.json"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class ModelIntegrityError(RuntimeError):
    """The weights on disk are not the ones the model card (or the caller) vouches for."""


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


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_model(model: nn.Module, model_dir: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write weights and card into `model_dir`, replacing it atomically; return the full card."""
    model_dir = Path(model_dir)
    payload = save_safetensors(clean_state_dict(unwrap(model).state_dict()))
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
    (stage / CARD).write_text(json.dumps(card, indent=2) + "\n")
    # A directory cannot be os.replace'd over a non-empty one: move the old one aside first.
    old = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
    if model_dir.exists():
        os.replace(model_dir, old)
    os.replace(stage, model_dir)
    shutil.rmtree(old, ignore_errors=True)
    return card


def load_exported(
    model_dir: str | Path,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported model in eval mode, after checking its sha256.

    The weights are read once, hashed, compared with the card's `sha256` and with
    `expected_sha256` (when given), and only then deserialized from the same bytes.
    """
    model_dir = Path(model_dir)
    try:
        card = json.loads((model_dir / CARD).read_text())
        payload = (model_dir / WEIGHTS).read_bytes()
    except (OSError, json.JSONDecodeError) as e:
        raise ModelIntegrityError(f"cannot read the exported model in {model_dir}: {e}") from None
    got = sha256_hex(payload)
    for who, want in (("the model card", card.get("sha256")), ("the caller", expected_sha256)):
        if who == "the caller" and want is None:
            continue
        if want != got:
            raise ModelIntegrityError(
                f"{model_dir / WEIGHTS}: sha256 {got} does not match {want} expected by {who}; refusing to load"
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
