"""Predictions remembered for feedback, and the feedback store (a JSONL file on a volume).

Every prediction gets an id and is remembered in a bounded LRU (by entries and by bytes) with
its input, so that ``POST /v1/feedback`` can turn a (prediction id, true label) pair into a
training example. Each feedback record is one JSON line appended with ``O_APPEND``, flushed and
fsynced before the request is answered: an answered request is on disk.

A record looks like::

    {"timestamp": "2025-01-01T00:00:00.000000+00:00", "predictionId": "…", "modelName": "digits",
     "modelDigest": "…", "predictedLabel": "3", "predictedScore": 0.98, "trueLabel": "5",
     "correct": false, "score": null,
     "input": {"source": "image", "shape": [1, 8, 8], "dtype": "uint8", "data": [[[0, …]]]}}

``input.data`` holds the sample as the model saw it before normalisation (resized, channels
converted; pixel values 0..255 for images, the client's values for arrays), nested [C, H, W].
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FeedbackStats", "FeedbackStore", "PredictionCache", "PredictionRecord"]


@dataclass
class PredictionRecord:
    prediction_id: str
    label: str
    score: float
    source: str  # "image", "array" or "v2"
    input: np.ndarray | None  # [C, H, W] before normalisation; None when too large to keep
    input_shape: tuple[int, ...]
    input_sha256: str
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # The model that made it, when another replica did (read from its prediction segment):
    # feedback is that model's, whichever server receives it.
    model_digest: str | None = None

    @property
    def nbytes(self) -> int:
        return 256 + (self.input.nbytes if self.input is not None else 0)

    def input_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "source": self.source,
            "shape": list(self.input_shape),
            "sha256": self.input_sha256,
        }
        if self.input is not None:
            data = self.input
            if data.dtype.kind == "f":
                data = np.round(data.astype(np.float64), 6)
            summary["dtype"] = str(self.input.dtype)
            summary["data"] = data.tolist()
        return summary


def make_record(
    prediction_id: str, label: str, score: float, source: str, sample: np.ndarray, keep_bytes: int
) -> PredictionRecord:
    sample = np.ascontiguousarray(sample)
    return PredictionRecord(
        prediction_id=prediction_id,
        label=label,
        score=score,
        source=source,
        input=sample.copy() if sample.nbytes <= keep_bytes else None,
        input_shape=tuple(sample.shape),
        input_sha256=hashlib.sha256(sample.tobytes()).hexdigest(),
    )


class PredictionCache:
    """Recent predictions, least recently used dropped first, bounded by count and bytes."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, PredictionRecord] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, record: PredictionRecord) -> None:
        old = self._items.pop(record.prediction_id, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._items[record.prediction_id] = record
        self._bytes += record.nbytes
        while self._items and (len(self._items) > self.max_entries or self._bytes > self.max_bytes):
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes

    def get(self, prediction_id: str) -> PredictionRecord | None:
        record = self._items.get(prediction_id)
        if record is not None:
            self._items.move_to_end(prediction_id)
        return record


@dataclass
class FeedbackStats:
    total: int = 0
    correct: int = 0
    incorrect: int = 0
    score_only: int = 0
    by_true_label: Counter[str] = field(default_factory=Counter)
    # The first 12 hex digits of the model's digest -> [correct, incorrect]: each model
    # version's accuracy on feedback (a canary's beside its stable's).
    by_model: dict[str, list[int]] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        self.total += 1
        graded = self.by_model.setdefault(str(record.get("modelDigest") or "")[:12], [0, 0])
        if record.get("correct") is True:
            self.correct += 1
            graded[0] += 1
        elif record.get("correct") is False:
            self.incorrect += 1
            graded[1] += 1
        else:
            self.score_only += 1
        if record.get("trueLabel") is not None:
            self.by_true_label[str(record["trueLabel"])] += 1

    def as_dict(self) -> dict[str, Any]:
        labelled = self.correct + self.incorrect
        return {
            "total": self.total,
            "correct": self.correct,
            "incorrect": self.incorrect,
            "scoreOnly": self.score_only,
            "accuracy": (self.correct / labelled) if labelled else None,
            "byTrueLabel": dict(sorted(self.by_true_label.items())),
            "byModelDigest": {
                digest: {
                    "correct": right,
                    "incorrect": wrong,
                    "accuracy": right / (right + wrong) if right + wrong else None,
                }
                for digest, (right, wrong) in sorted(self.by_model.items())
                if digest
            },
        }


class FeedbackStore:
    """Append-only JSONL file; one fsynced line per record.

    ``retention_days`` is applied once at start: older records are dropped by rewriting the file
    atomically (write a temporary file, fsync, rename). Counts cover what the file holds.
    """

    def __init__(self, path: str | os.PathLike[str], retention_days: int | None = None) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.stats = FeedbackStats()
        self._lock = threading.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        cutoff = None
        if self.retention_days:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days)
        kept: list[str] = []
        dropped = 0
        with self.path.open("r", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                    ts = dt.datetime.fromisoformat(record["timestamp"])
                except (ValueError, KeyError, TypeError):
                    # A torn last line from a crash mid-write: keep it out of the counts, keep it on disk.
                    kept.append(line)
                    continue
                if cutoff is not None and ts < cutoff:
                    dropped += 1
                    continue
                kept.append(line)
                self.stats.add(record)
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            log.info(
                "feedback retention: dropped %d records older than %s days",
                dropped,
                self.retention_days,
            )

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (blocking: call it from a thread)."""
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                data = line.encode("utf-8")
                while data:
                    written = os.write(fd, data)
                    data = data[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            self.stats.add(record)

    async def append_async(self, record: dict[str, Any]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.append, record)
