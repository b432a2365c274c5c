"""The onnxruntime backend: the ONNX export (normalisation inside the graph) on the CPU.

Nothing here imports torch: this is what the runtime-edge image serves with. The weights'
sha256 is still the model's digest (checked as the torch backend checks it); the ONNX file is
checked against the sha256 the model card records for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from tauon_runtime.modelfiles import read_onnx

from .model import ServedModel, softmax

__all__ = ["OnnxModel"]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cuda" and PROVIDERS["cuda"] not in available:
        raise RuntimeError(
            "device 'cuda' was asked for but this onnxruntime has no CUDAExecutionProvider"
        )
    if device == "auto" and PROVIDERS["cuda"] in available:
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return [PROVIDERS.get(device, PROVIDERS["cpu"])]


class OnnxModel(ServedModel):
    format = "onnx"

    def __init__(
        self, session: ort.InferenceSession, card: dict[str, Any], device: str, name: str
    ) -> None:
        super().__init__(card, device, name)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ValueError(f"the ONNX graph has {len(inputs)} inputs; Tauon serves one")
        if [int(d) if isinstance(d, int) else -1 for d in inputs[0].shape[1:]] != list(self.chw):
            raise ValueError(
                f"the ONNX graph's input has shape {inputs[0].shape}; the card says {list(self.chw)}"
            )
        self.session = session
        self._input, self._output = inputs[0].name, outputs[0].name

    @classmethod
    def open(cls, model_dir: str, name: str, expected_sha256: str | None, device: str) -> OnnxModel:
        card, graph = read_onnx(model_dir, expected_sha256)
        providers = _providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(graph, options, providers=providers)
        used = session.get_providers()[0]
        return cls(session, card, "cuda" if used == PROVIDERS["cuda"] else "cpu", name)

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        logits = self.session.run([self._output], {self._input: x})[0]
        return softmax(logits)
