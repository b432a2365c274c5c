"""The PyTorch backend: the safetensors weights in the zoo's module, on CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .model import ServedModel

__all__ = ["TorchModel", "pick_device"]


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchModel(ServedModel):
    format = "safetensors"

    def __init__(
        self, module: torch.nn.Module, card: dict[str, Any], device: torch.device, name: str
    ) -> None:
        super().__init__(card, device, name)
        self.module = module.to(device).eval()
        self._autocast = device.type == "cuda"

    @classmethod
    def open(
        cls, model_dir: str, name: str, expected_sha256: str | None, device: str
    ) -> TorchModel:
        from tauon_runtime.models import load_exported

        dev = pick_device(device)
        module, card = load_exported(model_dir, expected_sha256=expected_sha256, map_location="cpu")
        return cls(module, card, dev, name)

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        from tauon_runtime.models import normalize_input

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
            x = normalize_input(x, self.card)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
                logits = self.module(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy()
