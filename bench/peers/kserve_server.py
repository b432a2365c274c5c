"""The exported model behind KServe's Python model server, written the way KServe documents a
custom model: a `kserve.Model` with `load()` and `predict()`, served by `kserve.ModelServer`
over Open Inference Protocol v2 REST. Run by bench/serve_throughput.py --peers kserve in the
environment hack/setup-serve-peers.sh makes (kserve's own pins; torch shared with ours).

    python bench/peers/kserve_server.py --model-dir DIR --model-name bench --http_port P

KServe's Python server has no batcher of its own: KServe batches in its Go agent sidecar, and
only for the v1 protocol. So each request is one forward pass, as a KServe user gets over v2.
"""

from __future__ import annotations

import argparse
import uuid

import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from tauon_runtime.models import load_exported, normalize_input


class ExportedModel(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self) -> bool:
        self.module, self.card = load_exported(self.model_dir)  # weights only, sha256 checked
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        with torch.inference_mode():
            logits = self.module(normalize_input(torch.from_numpy(x), self.card))
            probs = torch.softmax(logits.float(), dim=1).numpy()
        out = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
        out.set_data_from_numpy(probs, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--model-name", default="bench")
    args, _ = ap.parse_known_args()  # the rest are KServe's own flags (--http_port …)
    ModelServer(enable_grpc=False).start([ExportedModel(args.model_name, args.model_dir)])
