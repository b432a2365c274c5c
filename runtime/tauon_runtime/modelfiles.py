"""An exported model's files, read and verified without torch (the edge server has none).

<model dir>/
  model.safetensors   the state_dict (no pickle: weights only); the model's digest is its sha256
  model.json          the model card
  model.onnx          optional: graph and weights for onnxruntime; its sha256 is in card.onnx
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
CARD = "model.json"
ONNX = "model.onnx"

__all__ = [
    "CARD",
    "ONNX",
    "WEIGHTS",
    "ModelIntegrityError",
    "read_onnx",
    "read_verified",
    "sha256_hex",
]


class ModelIntegrityError(RuntimeError):
    """The weights on disk are not the ones the model card (or the caller) vouches for."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(
    model_dir: str | Path, expected_sha256: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """(card, weights bytes), after checking the weights' sha256 against the card's and the
    caller's. The bytes are read once: what was hashed is what gets deserialized."""
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
    return card, payload


def read_onnx(
    model_dir: str | Path, expected_sha256: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """(card, ONNX bytes): the weights verified as :func:`read_verified` does (they are the
    model's digest), then the ONNX file against the sha256 the card records for it."""
    model_dir = Path(model_dir)
    card, _ = read_verified(model_dir, expected_sha256)
    onnx = card.get("onnx") or {}
    if not onnx.get("file"):
        why = onnx.get("reason") or "the model card records no ONNX export"
        raise FileNotFoundError(f"{model_dir} has no ONNX export (serve it as safetensors): {why}")
    try:
        graph = (model_dir / ONNX).read_bytes()
    except OSError as e:
        raise ModelIntegrityError(f"cannot read the ONNX export in {model_dir}: {e}") from None
    got = sha256_hex(graph)
    if got != onnx.get("sha256"):
        raise ModelIntegrityError(
            f"{model_dir / ONNX}: sha256 {got} does not match {onnx.get('sha256')} expected by "
            "the model card; refusing to load"
        )
    return card, graph
