"""A few samples of a prepared Dataset for people to look at (status.preview; the console's
Dataset page): one per class from the training split, as a PNG data URI for images, the text
for text, the first features for tabular rows. Small by construction: at most PREVIEW samples,
each a few hundred bytes."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

PREVIEW = 8
MAX_TEXT = 200
MAX_FEATURES = 6


def _png(x: np.ndarray) -> str:
    from PIL import Image

    c = x.shape[0]
    pixels = np.clip(x, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels[0] if c == 1 else np.moveaxis(pixels[:3], 0, -1))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def preview(task: str, x: np.ndarray, y: np.ndarray, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Up to PREVIEW samples of (x, y), the first of each class first."""
    classes = meta["classes"]
    order: list[int] = []
    for label in range(len(classes)):
        hits = np.flatnonzero(y == label)
        if len(hits):
            order.append(int(hits[0]))
    order = order[:PREVIEW]
    tokenizer = None
    if task == "text-classification" and meta.get("tokenizer"):
        from tauon_runtime.tasks.text import load_tokenizer

        tokenizer = load_tokenizer(meta["tokenizer"])
    out = []
    for i in order:
        sample: dict[str, Any] = {"label": str(classes[int(y[i])])}
        if task == "image-classification":
            sample["image"] = _png(x[i])
        elif tokenizer is not None:
            ids = [int(t) for t in np.asarray(x[i]).ravel() if t]
            sample["text"] = tokenizer.decode(ids)[:MAX_TEXT]
        elif task == "tabular-classification":
            names = meta.get("features") or [f"f{k}" for k in range(x.shape[1])]
            row = np.asarray(x[i], dtype=np.float64).ravel()
            sample["features"] = {
                n: round(float(v), 4)
                for n, v in zip(names[:MAX_FEATURES], row[:MAX_FEATURES], strict=False)
            }
        out.append(sample)
    return out
