"""What a person sees of a Dataset and a training run: status.preview (one sample per class,
small) and status.metrics.history (one entry per epoch, bounded)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tauon_runtime.data.preview import MAX_TEXT, PREVIEW, preview
from tauon_runtime.data.sources import builtin_digits
from tauon_runtime.tasks.tabular import builtin
from tauon_runtime.tasks.text import builtin_sentiment, encode, train_tokenizer
from tauon_runtime.train.loop import HISTORY, State, status_patch


def test_image_previews_are_pngs_one_per_class():
    raw = builtin_digits()
    samples = preview("image-classification", raw.x, raw.y, {"classes": raw.classes})
    assert len(samples) == PREVIEW and [s["label"] for s in samples] == raw.classes[:PREVIEW]
    png = base64.b64decode(samples[3]["image"].removeprefix("data:image/png;base64,"))
    img = np.asarray(Image.open(io.BytesIO(png)))
    first3 = int(np.flatnonzero(raw.y == 3)[0])
    assert img.shape == (8, 8) and (img == raw.x[first3][0]).all()
    assert all(len(s["image"]) < 400 for s in samples)


def test_text_previews_are_the_texts_and_tabular_ones_the_first_features():
    raw = builtin_sentiment(n=60)
    tok = train_tokenizer(list(raw.x), 500)
    x = encode(tok, list(raw.x), 32)
    samples = preview("text-classification", x, raw.y, {"classes": raw.classes, "tokenizer": tok.to_str()})
    assert {s["label"] for s in samples} == set(raw.classes)
    first = int(np.flatnonzero(raw.y == 0)[0])
    assert samples[0]["text"].split()[:3] == str(raw.x[first]).lower().split()[:3]
    assert all(len(s["text"]) <= MAX_TEXT for s in samples)
    wine = builtin("wine")
    rows = preview("tabular-classification", wine.x, wine.y,
                   {"classes": wine.classes, "features": wine.feature_names})
    assert len(rows) == 3 and list(rows[0]["features"])[:2] == ["alcohol", "malic_acid"]
    assert len(rows[0]["features"]) == 6


def test_the_metric_history_grows_by_one_entry_per_epoch_and_stays_bounded():
    state = State()
    for e in range(HISTORY + 5):
        state.end_epoch({"accuracy": e / 1000}, train_loss=1.0 / (e + 1), watch="accuracy", stopping=None)
    assert len(state.history) == HISTORY
    assert state.history[0]["epoch"] == 6 and state.history[-1] == {
        "epoch": HISTORY + 5, "accuracy": (HISTORY + 4) / 1000, "trainLoss": round(1.0 / (HISTORY + 5), 6)}
    patch = status_patch("history", {"history": state.history[-2:]})
    assert patch == {"status": {"metrics": {"history": state.history[-2:]}}}
