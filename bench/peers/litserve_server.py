"""The exported model behind LitServe, written the way LitServe documents a batched API: a
`litserve.LitAPI` with setup / decode_request / batch / predict / unbatch / encode_response,
batching on (`max_batch_size`, `batch_timeout`). Run by bench/serve_throughput.py --peers
litserve in the environment hack/setup-serve-peers.sh makes (litserve's pins; our torch).

    python bench/peers/litserve_server.py --model-dir DIR --port P --max-batch-size 32 \
        --batch-timeout-ms 5

Request and response bodies are those of `tauon-runtime serve`'s /v1/predict:
{"instances": [[C][H][W] pixels]} -> {"predictions": [{"label", "probabilities"}]}.
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np
import torch

from tauon_runtime.models import load_exported, normalize_input


class ExportedModelAPI(ls.LitAPI):
    def __init__(self, model_dir: str, **batching) -> None:
        super().__init__(**batching)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        self.module, self.card = load_exported(self.model_dir, map_location=device)
        self.classes = [str(c) for c in self.card["classes"]]

    def decode_request(self, request: dict) -> np.ndarray:
        return np.asarray(request["instances"][0], dtype=np.float32)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.module(normalize_input(torch.from_numpy(x), self.card))
            return torch.softmax(logits.float(), dim=1).numpy()

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict:
        return {"predictions": [{"label": self.classes[int(output.argmax())],
                                 "probabilities": output.tolist()}]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-timeout-ms", type=float, default=5.0)
    args = ap.parse_args()
    api = ExportedModelAPI(args.model_dir, max_batch_size=args.max_batch_size,
                           batch_timeout=args.batch_timeout_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False,
               log_level="warning")
