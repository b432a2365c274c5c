"""image-classification: images on a 0..255 scale, per-channel normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tauon_runtime.contract import PrepareConfig
from tauon_runtime.data import sources
from tauon_runtime.data.sources import RawData

from . import resolve_source_path


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the inputs after scaling to [0, 1]."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), 1024):  # in chunks: a float64 copy of all images may not fit
        part = x[start : start + 1024].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    std = np.maximum(std, 1e-6)  # a constant channel must not divide by 0
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


class ImageClassification:
    name = "image-classification"

    def load_raw(self, cfg: PrepareConfig, work: Path) -> RawData:
        src = cfg.source
        side = cfg.preprocessing.resize
        if src.builtin is not None:
            return sources.first(sources.builtin_digits(), src.builtin.limit)
        if src.synthetic is not None:
            return sources.synthetic(src.synthetic)
        if src.http is not None or src.s3 is not None:
            archive = sources.download(src, work)
            return sources.load_path(archive, cfg.format, work, side)
        return sources.load_path(resolve_source_path(cfg), cfg.format, work, side)

    def prepare(
        self, cfg: PrepareConfig, raw: RawData, index: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
        x = sources.resize(raw.x, cfg.preprocessing.resize) if cfg.preprocessing.resize else raw.x
        xs = {s: np.ascontiguousarray(x[i]) for s, i in index.items()}
        if cfg.preprocessing.normalize:
            mean, std = channel_stats(xs["train"])
        else:
            mean, std = [0.0] * x.shape[1], [1.0] * x.shape[1]
        preprocessing = {
            "resize": cfg.preprocessing.resize,
            "normalize": cfg.preprocessing.normalize,
            "scale": 255.0,  # inputs are divided by this, then normalized with mean/std
            "mean": mean,
            "std": std,
        }
        return xs, preprocessing, {}

    def card_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        shape, pre = manifest["shape"], manifest["preprocessing"]
        return {
            "preprocessing": {
                "resize": [shape[1], shape[2]],
                **{k: pre[k] for k in ("scale", "mean", "std")},
            }
        }

    def model_options(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return {}
