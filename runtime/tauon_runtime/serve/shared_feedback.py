"""Feedback every replica shares: predictions and feedback records in the artifact store.

A ModelDeployment with several replicas (on several nodes, restarted at any time) cannot keep the
predictions that feedback must join in one pod's memory, nor append to one file. With an
artifact store configured, each serving process writes::

    <prefix>/<ns>/feedback/<deployment>/
        predictions/<replica>/<segment:010d>.jsonl    what one process predicted, one object per flush
        records/<time>_<id>_<outcome>_<digest>_<label>.json   one object per feedback record

``<replica>`` is a random token drawn when the process starts, so a restarted container never
overwrites its previous life's segments. A prediction's id names its replica and segment
(``<replica>-<segment>-<random>``): the replica that receives the feedback reads that one
segment (waiting up to ``join_wait_s`` for a segment not flushed yet), joins the prediction to
the label and writes the record before it answers 201. Segments are flushed every
``flush_interval_s`` off the request path, and at shutdown; what a process predicted in the
interval before it was killed is the only thing lost.

Counts come from one LIST of ``records/``: the key holds the outcome (``correct``,
``incorrect`` or ``score``), the first 12 hex digits of the model's digest and the true label
(percent-encoded), so ``/v1/feedback/stats`` (per model version too) never reads the records. Retention deletes records and segments older than the deployment's
``retentionDays`` while serving, once at start and then every ``retention_interval_s``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from tauon_runtime.store import ArtifactStore, StoreError

from .feedback import FeedbackStats, PredictionRecord

log = logging.getLogger(__name__)

__all__ = ["SharedFeedback"]

_ID = re.compile(r"^([a-f0-9]{12})-([0-9]{1,10})-([a-f0-9]{16})$")
_OUTCOMES = {True: "correct", False: "incorrect", None: "score"}
MAX_PENDING_BYTES = 256 << 20  # predictions waiting for a store that is down; oldest dropped


def _timestamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _size(line: dict[str, Any]) -> int:
    return len(line.get("data", "")) + 256


def _encode_prediction(record: PredictionRecord, digest: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": record.prediction_id,
        "label": record.label,
        "score": record.score,
        "source": record.source,
        "modelDigest": digest,
        "createdAt": record.created.isoformat(),
        "shape": list(record.input_shape),
        "sha256": record.input_sha256,
    }
    if record.input is not None:
        out["dtype"] = str(record.input.dtype)
        out["data"] = base64.b64encode(record.input.tobytes()).decode()
    return out


def _decode_prediction(line: dict[str, Any]) -> PredictionRecord:
    data = None
    if "data" in line:
        raw = base64.b64decode(line["data"])
        data = np.frombuffer(raw, dtype=np.dtype(line["dtype"])).reshape(line["shape"]).copy()
    return PredictionRecord(
        prediction_id=line["id"],
        label=line["label"],
        score=float(line["score"]),
        source=line["source"],
        input=data,
        input_shape=tuple(line["shape"]),
        input_sha256=line["sha256"],
        created=dt.datetime.fromisoformat(line["createdAt"]),
        model_digest=line.get("modelDigest"),
    )


class SharedFeedback:
    """The store-backed feedback log of one serving process (see the module's docstring)."""

    def __init__(
        self,
        store: ArtifactStore,
        key: str,
        retention_days: int,
        *,
        flush_interval_s: float = 1.0,
        join_wait_s: float = 3.0,
        retention_interval_s: float = 3600.0,
        cached_segments: int = 16,
    ) -> None:
        self.store = store
        self.key = key
        self.retention_days = retention_days
        self.flush_interval_s = flush_interval_s
        self.join_wait_s = join_wait_s
        self.retention_interval_s = retention_interval_s
        self.replica = secrets.token_hex(6)
        self._segment = 0
        self._pending: list[dict[str, Any]] = []  # the open segment
        self._sealed: dict[int, list[dict[str, Any]]] = {}  # closed, not written yet
        self._pending_bytes = 0  # open and sealed
        self._segments: OrderedDict[tuple[str, int], dict[str, PredictionRecord]] = OrderedDict()
        self._cached_segments = cached_segments
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()

    # ------------------------------------------------------------------ predictions
    def new_id(self) -> str:
        """An id for a prediction made now: it names this replica and the segment it goes in."""
        return f"{self.replica}-{self._segment}-{secrets.token_hex(8)}"

    def record(self, record: PredictionRecord, digest: str) -> None:
        """Queue a prediction for the next flush (never blocks the request)."""
        line = _encode_prediction(record, digest)
        self._pending.append(line)
        self._pending_bytes += _size(line)
        while self._pending_bytes > MAX_PENDING_BYTES and self._sealed:
            segment, lines = next(iter(self._sealed.items()))
            del self._sealed[segment]
            self._pending_bytes -= sum(_size(x) for x in lines)
            log.warning(
                "the store is behind: %d predictions dropped before they were kept", len(lines)
            )

    def _segment_key(self, replica: str, segment: int) -> str:
        return f"{self.key}/predictions/{replica}/{segment:010d}.jsonl"

    async def flush(self) -> None:
        """Seal the queued predictions as this replica's next segment, then write every sealed
        segment not written yet (a segment that fails stays for the next flush)."""
        async with self._flush_lock:
            if self._pending:
                self._sealed[self._segment] = self._pending
                self._pending = []
                self._segment += 1  # ids handed out from now on name the next segment
            for segment, lines in list(self._sealed.items()):
                body = "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)
                key = self._segment_key(self.replica, segment)
                try:
                    await asyncio.to_thread(self.store.put_bytes, key, body.encode())
                except StoreError as e:
                    log.warning("feedback: prediction segment %d not written yet (%s)", segment, e)
                    return
                if self._sealed.pop(segment, None) is not None:
                    self._pending_bytes -= sum(_size(x) for x in lines)

    def _remember_segment(self, key: tuple[str, int], records: dict[str, PredictionRecord]) -> None:
        self._segments[key] = records
        self._segments.move_to_end(key)
        while len(self._segments) > self._cached_segments:
            self._segments.popitem(last=False)

    async def lookup(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction an id names, made by any replica of the deployment, or None."""
        m = _ID.match(prediction_id)
        if m is None:
            return None
        replica, segment = m.group(1), int(m.group(2))
        if replica == self.replica:
            if segment >= self._segment:
                lines = self._pending if segment == self._segment else []
            else:
                lines = self._sealed.get(segment, [])
            for line in lines:
                if line["id"] == prediction_id:
                    return _decode_prediction(line)
            if segment >= self._segment:
                return None  # not handed out by this process
        cached = self._segments.get((replica, segment))
        if cached is not None:
            return cached.get(prediction_id)
        deadline = time.monotonic() + self.join_wait_s
        while True:
            try:
                body = await asyncio.to_thread(self.store.get, self._segment_key(replica, segment))
                break
            except FileNotFoundError:
                if time.monotonic() >= deadline:
                    return None  # unknown, or older than the retention
                await asyncio.sleep(min(0.25, self.flush_interval_s))
        records = {}
        for raw in body.splitlines():
            if raw.strip():
                rec = _decode_prediction(json.loads(raw))
                records[rec.prediction_id] = rec
        self._remember_segment((replica, segment), records)
        return records.get(prediction_id)

    # ------------------------------------------------------------------ feedback records
    async def append_async(self, entry: dict[str, Any]) -> None:
        """Write one feedback record; returns once the store holds it."""
        label = entry.get("trueLabel")
        name = "_".join(
            (
                _timestamp(dt.datetime.fromisoformat(entry["timestamp"])),
                entry["predictionId"].rsplit("-", 1)[-1],
                _OUTCOMES[entry.get("correct")],
                str(entry.get("modelDigest") or "-")[:12],
                "-" if label is None else quote(str(label), safe=""),
            )
        )
        body = json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()
        await asyncio.to_thread(self.store.put_bytes, f"{self.key}/records/{name}.json", body)

    async def stats_async(self) -> FeedbackStats:
        """Counts over every replica's records (one LIST)."""
        stats = FeedbackStats()
        keys = await asyncio.to_thread(self.store.list_keys, f"{self.key}/records/")
        for key in keys:
            parts = key.rsplit("/", 1)[-1].removesuffix(".json").split("_", 4)
            if len(parts) != 5:
                continue
            outcome, digest, label = parts[2], parts[3], parts[4]
            stats.add(
                {
                    "correct": {"correct": True, "incorrect": False}.get(outcome),
                    "modelDigest": None if digest == "-" else digest,
                    "trueLabel": None if label == "-" else unquote(label),
                }
            )
        return stats

    # ------------------------------------------------------------------ retention
    async def apply_retention(self) -> int:
        """Delete records and prediction segments older than the retention; -> how many."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days)
        dropped = 0
        for sub in ("records/", "predictions/"):
            objects = await asyncio.to_thread(self.store.list_objects, f"{self.key}/{sub}")
            for key, modified in objects:
                if modified < cutoff:
                    await asyncio.to_thread(self.store.delete, key)
                    dropped += 1
        if dropped:
            log.info(
                "feedback retention: dropped %d objects older than %d days",
                dropped,
                self.retention_days,
            )
        return dropped

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.flush_interval_s, self.flush)),
            asyncio.create_task(
                self._every(self.retention_interval_s, self.apply_retention, now=True)
            ),
        ]

    async def _every(self, seconds: float, fn: Any, now: bool = False) -> None:
        if not now:
            await asyncio.sleep(seconds)
        while True:
            try:
                await fn()
            except StoreError as e:
                log.warning("feedback: %s failed: %s", getattr(fn, "__name__", fn), e)
            await asyncio.sleep(seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
