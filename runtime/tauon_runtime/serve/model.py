"""The served model: an exported model's card and one forward pass, behind a backend.

Inputs reach :meth:`ServedModel.forward` on the 0..255 pixel scale every Tauon data set uses
(image pixels as they are, arrays as the client sends them) and are normalised the way the model
card's ``preprocessing`` says: ``(x / scale - mean) / std``. Two backends implement it: PyTorch
on the safetensors (``serve.torch_backend``) and onnxruntime on the ONNX export
(``serve.onnx_backend``). This module imports neither: with the onnx backend nothing imports
torch, so the server runs in the runtime-edge image, which has none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "ServedModel", "softmax"]

Format = Literal["safetensors", "onnx"]
FORMATS: tuple[Format, ...] = ("safetensors", "onnx")


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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    z = logits.astype(np.float32, copy=False)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class ServedModel:
    """A loaded, warmed-up model; :meth:`forward` is called from one thread at a time.

    Subclasses (the backends) set what runs the model and implement :meth:`forward`.
    """

    format: Format = "safetensors"

    def __init__(self, card: dict[str, Any], device: Any, name: str) -> None:
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
        self.features = [str(f) for f in card.get("features") or []]  # tabular: input order
        self.encode_text: Callable[[list[str]], np.ndarray] | None = None
        if card.get("tokenizer"):  # a text model: its own tokenizer, saved with it
            from tauon_runtime.tasks.text import encode, load_tokenizer

            tokenizer, length = load_tokenizer(str(card["tokenizer"])), self.chw[0]
            self.encode_text = lambda texts: encode(tokenizer, texts, length)[:, :, None, None]

    @classmethod
    def load(
        cls,
        model_dir: str,
        name: str,
        expected_sha256: str | None = None,
        device: str = "auto",
        format: Format = "safetensors",
    ) -> ServedModel:
        """Verify and load an exported model with the backend for ``format`` (weights only;
        an ONNX file is a graph and weights, run by onnxruntime). Raises ModelIntegrityError
        on a sha256 mismatch."""
        backend: type[ServedModel]
        if format == "onnx":
            from .onnx_backend import OnnxModel as backend
        elif format == "safetensors":
            from .torch_backend import TorchModel as backend
        else:
            raise ValueError(f"unknown model format {format!r}; choose one of {', '.join(FORMATS)}")
        started = time.perf_counter()
        served = backend.open(model_dir, name, expected_sha256, device)
        log.info(
            "model %s loaded (%s): %s, %d classes, input %s, sha256 %s, device %s, %.2fs",
            name,
            served.format,
            served.architecture,
            len(served.classes),
            list(served.chw),
            served.digest,
            served.device,
            time.perf_counter() - started,
        )
        return served

    @classmethod
    def open(
        cls, model_dir: str, name: str, expected_sha256: str | None, device: str
    ) -> ServedModel:
        raise NotImplementedError

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [N, C, H, W] on the 0..255 scale -> float32 probabilities [N, K]."""
        raise NotImplementedError

    def warm_up(self, batch_size: int) -> None:
        """One forward pass at the largest batch, so the first request pays no set-up cost."""
        started = time.perf_counter()
        for n in sorted({1, batch_size}):
            self.forward(np.zeros((n, *self.chw), dtype=np.float32))
        log.info("warm-up done in %.2fs", time.perf_counter() - started)
