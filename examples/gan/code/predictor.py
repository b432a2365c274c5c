"""The GAN example's predictor class: ModelDeployment `gan` serves the generator through it.

`/v1/predict` takes `{"instances": [{"seed": 7}, ...]}` and answers one generated digit per
instance: `{"seed": 7, "png": "<base64 PNG, 32x32>", "pixels": [[0..255] x 8] x 8}`. The OIP v2
endpoint takes an INT64 tensor of seeds `[N]` and answers a UINT8 tensor `[N, 1, 8, 8]`. A seed
always draws the same digit.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import dcgan
import numpy as np
import torch
from PIL import Image

from tauon_runtime import sdk

MAX_SEED = 2**63 - 1
PNG_SCALE = 4  # 8x8 is too small to look at


def _seed(instance: Any) -> int:
    value = instance.get("seed") if isinstance(instance, dict) else instance
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError('each instance is {"seed": <integer>} (v2: an INT64 tensor of seeds)')
    if not 0 <= int(value) <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}")
    return int(value)


def _png(pixels: np.ndarray) -> str:
    image = Image.fromarray(pixels, mode="L").resize(
        (8 * PNG_SCALE, 8 * PNG_SCALE), Image.Resampling.NEAREST
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


class Generator:
    example = {"seed": 0}  # the server's warm-up request

    def load(self, model_dir: str) -> None:
        card, weights = sdk.load_weights(model_dir)  # checked against its digest, no pickle
        self.latent = int(card.get("latent", dcgan.LATENT))
        self.net = dcgan.Generator(latent=self.latent)
        self.net.load_state_dict(weights)
        self.net.eval()

    def predict(self, instances: list[Any]) -> list[Any]:
        seeds = [_seed(i) for i in instances]
        z = torch.stack(
            [torch.randn(self.latent, generator=torch.Generator().manual_seed(s)) for s in seeds]
        )
        with torch.inference_mode():
            images = self.net(z)  # [N, 1, 8, 8] in [-1, 1]
        pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        return [
            p
            if isinstance(i, np.ndarray)
            else {"seed": s, "png": _png(p[0]), "pixels": p[0].tolist()}
            for i, s, p in zip(instances, seeds, pixels, strict=True)
        ]
