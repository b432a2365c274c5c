"""The shared machinery of every reconcile: the cache, a coalescing work queue, applying
children without no-op writes, writing status only when it changed, and Events."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import kopf
from kubernetes.client.rest import ApiException

from tauon_operator import conditions
from tauon_operator.kube import Kube
from tauon_operator.meta import SPEC_HASH
from tauon_operator.metrics import API_WRITES, RECONCILE_SECONDS, RECONCILES
from tauon_operator.settings import Settings
from tauon_operator.store import Store

log = logging.getLogger("tauon.controller")
Reconcile = Callable[["Controller", str, str], Awaitable[None]]
# Children whose current state the watch streams into the cache; the rest are compared with
# what this process last applied.
WATCHED = ("Job", "Deployment", "Pod")
# Apply order: kinds absent here go in the last tier (the workloads).
TIERS = {"ServiceAccount": 0, "Role": 0, "ConfigMap": 0, "Service": 0,
         "PersistentVolumeClaim": 0, "RoleBinding": 1}
OWNED_STATUS = ("observedGeneration", "phase", "conditions")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Controller:
    """Reconciles run on a fixed pool of workers fed by a de-duplicating FIFO queue (as in
    controller-runtime): a key is never reconciled twice at once, a burst of events for one
    object folds into one more run, and a thousand new objects each get their turn instead of
    all interleaving and all finishing late."""

    def __init__(self, kube: Kube, settings: Settings, workers: int = 16):
        self.kube = kube
        self.settings = settings
        self.store = Store()
        self.reconcilers: dict[str, Reconcile] = {}
        self.workers = workers
        self._queue: asyncio.Queue[tuple] | None = None
        self._queued: set[tuple] = set()
        self._processing: set[tuple] = set()
        self._dirty: set[tuple] = set()
        self._tasks: list[asyncio.Task] = []
        self._applied: dict[tuple, str] = {}

    # ------------------------------------------------------------------ the work queue
    def enqueue(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile soon; triggers that arrive while one runs fold into one more run."""
        key = (kind, namespace, name)
        loop = asyncio.get_running_loop()
        if delay:
            loop.call_later(delay, self.enqueue, kind, namespace, name)
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                retry = await self._reconcile_once(*key)
            finally:
                self._processing.discard(key)
                self._queue.task_done()
            if retry:
                self.enqueue(*key, delay=retry)
            elif key in self._dirty:
                self._dirty.discard(key)
                self.enqueue(*key)

    async def _reconcile_once(self, kind: str, namespace: str, name: str) -> float:
        t0 = time.monotonic()
        try:
            await self.reconcilers[kind](self, namespace, name)
            RECONCILES.labels(kind, "success").inc()
            return 0.0
        except ApiException as e:
            RECONCILES.labels(kind, "error").inc()
            log.warning("reconcile %s %s/%s: API error %s %s: %s", kind, namespace, name,
                        e.status, e.reason, (e.body or b"")[:600])
            # Conflicts, throttling, a dependency not there yet, server trouble: soon. Else a
            # rejected request that retrying will not fix quickly: back off.
            return 5.0 if e.status in (404, 409, 429) or e.status >= 500 else 30.0
        except Exception:  # noqa: BLE001 - a bug must not take the operator down
            RECONCILES.labels(kind, "error").inc()
            log.exception("reconcile %s %s/%s failed", kind, namespace, name)
            return 30.0
        finally:
            RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - t0)

    async def drain(self) -> None:
        """Waits until the queue is empty and no reconcile runs (tests, benchmarks)."""
        while self._queue is not None and (self._queued or self._processing):
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ writing
    async def ensure(self, children: list[dict[str, Any]]) -> None:
        """Apply each child whose desired state changed; never write what is already so.
        Objects that depend on nothing go first, together; then what refers to them (a
        RoleBinding needs its Role: the API server checks the grant against it); then the
        workloads that use them all."""
        for tier in range(len(TIERS) + 1):
            await asyncio.gather(*(self._ensure_one(c) for c in children
                                   if TIERS.get(c["kind"], len(TIERS)) == tier))

    async def _ensure_one(self, child: dict[str, Any]) -> None:
        meta = child["metadata"]
        key = (child["kind"], meta["namespace"], meta["name"])
        want = meta["annotations"][SPEC_HASH]
        if child["kind"] in WATCHED:
            current = self.store.get(child["kind"], meta["namespace"], meta["name"])
            if current is not None and child["kind"] == "Job":
                await self._sync_suspend(child, current)
                return  # a Job's template is immutable: an attempt keeps its pods
            have = ((current or {}).get("metadata", {}).get("annotations") or {}).get(SPEC_HASH)
        else:
            have = self._applied.get(key)
        if have == want:
            return
        try:
            applied = await self.kube.apply(child)
        except ApiException as e:
            if child["kind"] == "PersistentVolumeClaim" and e.status == 422:
                log.warning("claim %s/%s cannot change that way: %s", *key[1:], e.reason)
                self._applied[key] = want
                return
            raise
        API_WRITES.labels("apply", child["kind"]).inc()
        self._applied[key] = want
        if child["kind"] in WATCHED and applied:
            self.store.observe(child["kind"], "MODIFIED", applied)  # don't wait for the watch

    async def _sync_suspend(self, desired: dict, current: dict) -> None:
        want = desired["spec"].get("suspend", False)
        if bool(current["spec"].get("suspend")) != want:
            m = current["metadata"]
            await self.kube.merge_patch("batch/v1", "Job", m["namespace"], m["name"],
                                        {"spec": {"suspend": want}})
            API_WRITES.labels("patch", "Job").inc()

    async def write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> bool:
        """Merge-patch only the fields that differ; the runtime owns progress and metrics."""
        current = obj.get("status") or {}
        patch = {k: v for k, v in status.items() if current.get(k) != v}
        if not patch:
            return False
        m = obj["metadata"]
        updated = await self.kube.patch_status(obj["apiVersion"], obj["kind"], m["namespace"],
                                               m["name"], patch)
        API_WRITES.labels("status", obj["kind"]).inc()
        if updated:  # the next reconcile compares against what we wrote, not a stale copy
            self.store.observe(obj["kind"], "MODIFIED", updated)
        return True

    async def invalid_spec(self, obj: dict[str, Any], message: str, now: str) -> None:
        """A spec the API server let through but the operator cannot build: say so (Stalled,
        an Event), and do not retry it in a loop."""
        gen = obj["metadata"].get("generation", 1)
        conds = conditions.standard(ready=False, reason="InvalidSpec", message=message, stalled=True)
        status = {"observedGeneration": gen, "phase": "Failed",
                  "conditions": conditions.merge((obj.get("status") or {}).get("conditions"),
                                                 conds, gen, now)}
        if await self.write_status(obj, status):
            self.event(obj, "Warning", "InvalidSpec", message)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await self.kube.delete(api_version, kind, namespace, name)
        API_WRITES.labels("delete", kind).inc()

    @staticmethod
    def event(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        kopf.event(obj, type=type_, reason=reason, message=message[:1024])
