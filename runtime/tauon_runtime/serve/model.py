"""The served model: exported weights and card loaded, inputs normalised, one forward pass.

Inputs reach :meth:`ServedModel.forward` on the 0..255 pixel scale every Tauon data set uses
(image pixels as they are, arrays as the client sends them) and are normalised on the device,
batched, the way the model card's ``preprocessing`` says: ``(x / scale - mean) / std``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["ServedModel", "pick_device"]


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_preprocessing(card: dict[str, Any], channels: int) -> None:
    pre = card.get("preprocessing")
    if not isinstance(pre, dict):
        raise ValueError("model card has no preprocessing {scale, mean, std}")
    for key in ("mean", "std"):
        values = pre.get(key)
        if not isinstance(values, list) or len(values) != channels:
            raise ValueError(
                f"model card preprocessing.{key} must list {channels} values, got {values!r}"
            )
    if any(float(s) <= 0 for s in pre["std"]) or float(pre.get("scale", 255.0)) <= 0:
        raise ValueError("model card preprocessing.std and .scale must be positive")


class ServedModel:
    """A loaded, warmed-up model; :meth:`forward` is called from one thread at a time."""

    def __init__(
        self, module: torch.nn.Module, card: dict[str, Any], device: torch.device, name: str
    ) -> None:
        shape = card.get("inputShape")
        if not (
            isinstance(shape, list | tuple) and len(shape) == 3 and all(int(d) > 0 for d in shape)
        ):
            raise ValueError(f"model card inputShape must be [C, H, W], got {shape!r}")
        self.name = name
        self.card = card
        self.device = device
        self.chw: tuple[int, int, int] = tuple(int(d) for d in shape)  # type: ignore[assignment]
        num_classes = int(card.get("numClasses") or len(card.get("classes") or []))
        classes = [str(c) for c in (card.get("classes") or [])]
        if classes and len(classes) != num_classes:
            raise ValueError(f"model card has {len(classes)} classes but numClasses {num_classes}")
        self.classes = classes or [str(i) for i in range(num_classes)]
        self.architecture = str(card.get("architecture", "unknown"))
        self.digest = str(card.get("sha256", ""))
        _check_preprocessing(card, self.chw[0])
        self.input_name = "input"
        self.module = module.to(device).eval()
        self._autocast = device.type == "cuda"

    @classmethod
    def load(
        cls, model_dir: str, name: str, expected_sha256: str | None = None, device: str = "auto"
    ) -> ServedModel:
        """Verify and load an exported model (weights only). Raises ModelIntegrityError on a
        sha256 mismatch."""
        from tauon_runtime.models import load_exported

        dev = pick_device(device)
        started = time.perf_counter()
        module, card = load_exported(model_dir, expected_sha256=expected_sha256, map_location="cpu")
        served = cls(module, card, dev, name)
        log.info(
            "model %s loaded: %s, %d classes, input %s, sha256 %s, device %s, %.2fs",
            name,
            served.architecture,
            len(served.classes),
            list(served.chw),
            served.digest,
            dev,
            time.perf_counter() - started,
        )
        return served

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [N, C, H, W] on the 0..255 scale -> float32 probabilities [N, K]."""
        from tauon_runtime.models import normalize_input

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
            x = normalize_input(x, self.card)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
                logits = self.module(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy()

    def warm_up(self, batch_size: int) -> None:
        """One forward pass at the largest batch, so the first request pays no set-up cost."""
        started = time.perf_counter()
        for n in sorted({1, batch_size}):
            self.forward(np.zeros((n, *self.chw), dtype=np.float32))
        log.info("warm-up done in %.2fs", time.perf_counter() - started)
