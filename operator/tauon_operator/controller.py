"""The shared machinery of every reconcile: the cache, a coalescing work queue with per-key
backoff, and the one reconcile shape every kind follows:

    observe -> plan status -> build children -> apply and prune -> write status -> Events

A kind's handler observes (from the cache) and asks its pure plan and builders for an
`Outcome`; `Controller.sync` carries it out the same way for every kind. Kind-specific rules
(a Job that cannot be re-applied once created, the order of a restart) arrive as data in the
Outcome, never as branches here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from pydantic import BaseModel

from tauon_operator import conditions
from tauon_operator.api import API_VERSION, KINDS
from tauon_operator.drift import drifted
from tauon_operator.kube import Kube
from tauon_operator.meta import PARENT_LABEL, SPEC_HASH
from tauon_operator.metrics import API_WRITES, DRIFT_REPAIRS, RECONCILE_SECONDS, RECONCILES
from tauon_operator.settings import Settings
from tauon_operator.store import Store

log = logging.getLogger("tauon.controller")
Key = tuple[str, str, str]  # (kind, namespace, name)
Reconcile = Callable[["Controller", str, str], Awaitable[None]]
# A child that exists and cannot be re-applied (a Job's template is immutable): given the
# desired and the current object, the merge patch to send, or None.
Update = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]

# Every kind the operator creates; the watches stream them all into the cache (handlers/watch.py).
CHILD_KINDS: dict[str, str] = {
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Job": "batch/v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    # A ModelDeployment's retraining rounds (kopf watches them as parents too).
    "Dataset": API_VERSION,
    "TrainingJob": API_VERSION,
}
# Children removed when the spec no longer wants them. Claims are not: their data outlives a
# spec edit (garbage collection removes them with their parent).
PRUNABLE = (
    "Job",
    "Deployment",
    "ConfigMap",
    "HorizontalPodAutoscaler",
    "Dataset",
    "TrainingJob",
)
# Apply order: kinds absent here go in the last tier (the workloads).
TIERS = {
    "ServiceAccount": 0,
    "Role": 0,
    "ConfigMap": 0,
    "Service": 0,
    "PersistentVolumeClaim": 0,
    "RoleBinding": 1,
}
BACKOFF_BASE, BACKOFF_MAX = 0.5, 300.0
STATUS_MODELS: dict[str, Any] = {k.KIND: k.model_fields["status"].annotation for k in KINDS}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Outcome:
    """What one reconcile of a parent decided: its status, and what to do with its children."""

    status: BaseModel
    children: list[dict[str, Any]] | None = None  # None: leave the children as they are
    keep: frozenset[tuple[str, str]] = frozenset()  # (kind, name): not desired now, not pruned
    updates: Mapping[str, Update] = field(default_factory=dict)  # kind -> in-place update
    status_first: bool = False  # write status before touching children (a restart's attempt)
    delete_after_status: tuple[tuple[str, str], ...] = ()  # (kind, name)
    clear: tuple[str, ...] = ()  # status fields to remove when the new status has none
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


class Controller:
    """Reconciles run on a fixed pool of workers fed by a de-duplicating FIFO queue (as in
    controller-runtime): a key is never reconciled twice at once, a burst of events for one
    object folds into one more run, a failing key backs off exponentially on its own, and a
    thousand new objects each get their turn instead of all interleaving and finishing late."""

    def __init__(self, kube: Kube, settings: Settings, workers: int = 16):
        self.kube = kube
        self.settings = settings
        self.store = Store()
        self.reconcilers: dict[str, Reconcile] = {}
        self.workers = workers
        self._queue: asyncio.Queue[Key] | None = None
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ the work queue
    def enqueue(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile soon; triggers that arrive while one runs fold into one more run."""
        key: Key = (kind, namespace, name)
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

    def enqueue_after(self, kind: str, namespace: str, name: str, delay: float) -> None:
        """Reconcile again in `delay` seconds (a poll): one timer per key, however many runs
        ask for it, so a busy object never multiplies its polls."""
        key: Key = (kind, namespace, name)
        if key in self._timers:
            return

        def fire() -> None:
            self._timers.pop(key, None)
            self.enqueue(kind, namespace, name)

        self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                ok = await self._reconcile_once(*key)
            finally:
                self._processing.discard(key)
                self._queue.task_done()
            if ok:
                self._failures.pop(key, None)
            else:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                self.enqueue(*key, delay=backoff(failures))
                continue
            if key in self._dirty:
                self._dirty.discard(key)
                self.enqueue(*key)

    async def _reconcile_once(self, kind: str, namespace: str, name: str) -> bool:
        t0 = time.monotonic()
        try:
            await self.reconcilers[kind](self, namespace, name)
            RECONCILES.labels(kind, "success").inc()
            return True
        except ApiException as e:
            RECONCILES.labels(kind, "error").inc()
            log.warning(
                "reconcile %s %s/%s: API error %s %s: %s",
                kind,
                namespace,
                name,
                e.status,
                e.reason,
                (e.body or b"")[:600],
            )
            return False
        except Exception:
            RECONCILES.labels(kind, "error").inc()
            log.exception("reconcile %s %s/%s failed", kind, namespace, name)
            return False
        finally:
            RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - t0)

    async def drain(self) -> None:
        """Waits until the queue is empty and no reconcile runs (tests, benchmarks)."""
        while self._queue is not None and (self._queued or self._processing):
            await asyncio.sleep(0.05)

    def queue_stats(self) -> dict[str, int]:
        """The work queue as its metrics show it (resource_metrics.WorkQueue)."""
        return {
            "depth": len(self._queued),
            "active": len(self._processing),
            "retrying": len(self._failures),
        }

    # ------------------------------------------------------------------ the reconcile shape
    async def sync(self, parent: dict[str, Any], outcome: Outcome) -> bool:
        """Carry out an Outcome: apply and prune the children, write the status, post the
        Events. Returns whether the status changed."""
        meta = parent["metadata"]
        changed = False
        if outcome.status_first:
            changed = await self.write_status(parent, outcome.status, outcome.clear)
        if outcome.children is not None:
            try:
                await self.ensure(outcome.children, outcome.updates)
            except ApiException as e:
                if e.status != 422:
                    raise
                # The API server refuses a child of this spec: retrying cannot help until the
                # spec changes (a new generation enqueues us again).
                await self.invalid_spec(parent, _api_message(e))
                return True
            await self.prune(parent, outcome.children, outcome.keep)
        if not outcome.status_first:
            changed = await self.write_status(parent, outcome.status, outcome.clear)
        for kind, name in outcome.delete_after_status:
            if self.store.get(kind, meta["namespace"], name) is not None:
                await self.delete(CHILD_KINDS[kind], kind, meta["namespace"], name)
        if changed:
            for type_, reason, message in outcome.events:
                self.event(parent, type_, reason, message)
        return changed

    async def ensure(
        self, children: list[dict[str, Any]], updates: Mapping[str, Update] | None = None
    ) -> None:
        """Apply each child whose desired state changed; never write what is already so.
        Objects that depend on nothing go first, together; then what refers to them (a
        RoleBinding needs its Role: the API server checks the grant against it); then the
        workloads that use them all."""
        for tier in range(len(TIERS) + 1):
            await asyncio.gather(
                *(
                    self._ensure_one(c, updates or {})
                    for c in children
                    if TIERS.get(c["kind"], len(TIERS)) == tier
                )
            )

    async def _ensure_one(self, child: dict[str, Any], updates: Mapping[str, Update]) -> None:
        meta = child["metadata"]
        current = self.store.get(child["kind"], meta["namespace"], meta["name"])
        if current is not None and child["kind"] in updates:
            patch = updates[child["kind"]](child, current)
            if patch:
                await self.kube.merge_patch(
                    child["apiVersion"], child["kind"], meta["namespace"], meta["name"], patch
                )
                API_WRITES.labels("patch", child["kind"]).inc()
            return
        if current is not None:
            paths = drifted(child, current)
            if not paths:
                return  # the cluster holds what we want: write nothing
            have = (current["metadata"].get("annotations") or {}).get(SPEC_HASH)
            if have == meta["annotations"][SPEC_HASH]:  # not our change: someone else's
                log.info(
                    "repairing %s %s/%s: %s changed",
                    child["kind"],
                    meta["namespace"],
                    meta["name"],
                    ", ".join(paths[:4]),
                )
                DRIFT_REPAIRS.labels(child["kind"]).inc()
        applied = await self.kube.apply(child)
        API_WRITES.labels("apply", child["kind"]).inc()
        if applied:
            self.store.observe(child["kind"], "MODIFIED", applied)  # don't wait for the watch

    async def prune(
        self,
        parent: dict[str, Any],
        desired: list[dict[str, Any]],
        keep: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """Delete the parent's children that the spec no longer wants (found by the parent's
        label and owner reference, over the kinds it may drop)."""
        meta = parent["metadata"]
        wanted = {(c["kind"], c["metadata"]["name"]) for c in desired} | keep
        label = {PARENT_LABEL[parent["kind"]]: meta["name"]}
        for kind in PRUNABLE:
            for child in self.store.select(kind, meta["namespace"], label):
                name = child["metadata"]["name"]
                owned = any(
                    o.get("uid") == meta.get("uid")
                    for o in child["metadata"].get("ownerReferences") or []
                )
                if (
                    owned
                    and (kind, name) not in wanted
                    and not child["metadata"].get("deletionTimestamp")
                ):
                    log.info("pruning %s %s/%s: no longer desired", kind, meta["namespace"], name)
                    await self.delete(CHILD_KINDS[kind], kind, meta["namespace"], name)

    # ------------------------------------------------------------------ writing
    async def write_status(
        self, obj: dict[str, Any], status: BaseModel, clear: tuple[str, ...] = ()
    ) -> bool:
        """Merge-patch only the fields that differ; the runtime owns progress and metrics."""
        current = obj.get("status") or {}
        new = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        patch: dict[str, Any] = {k: v for k, v in new.items() if current.get(k) != v}
        patch.update({k: None for k in clear if k not in new and current.get(k) is not None})
        if not patch:
            return False
        m = obj["metadata"]
        updated = await self.kube.patch_status(
            obj["apiVersion"], obj["kind"], m["namespace"], m["name"], patch
        )
        API_WRITES.labels("status", obj["kind"]).inc()
        if updated:  # the next reconcile compares against what we wrote, not a stale copy
            self.store.observe(obj["kind"], "MODIFIED", updated)
        return True

    async def invalid_spec(self, obj: dict[str, Any], message: str) -> None:
        """A spec the API server let through but the operator cannot build: say so (Stalled,
        an Event), and do not retry it in a loop."""
        gen = obj["metadata"].get("generation", 1)
        conds = conditions.standard(
            ready=False, reason="InvalidSpec", message=message, stalled=True
        )
        previous = (obj.get("status") or {}).get("conditions")
        status = STATUS_MODELS[obj["kind"]](
            observed_generation=gen,
            phase="Failed",
            conditions=conditions.merge(previous, conds, gen, utcnow()),
        )
        if await self.write_status(obj, status):
            self.event(obj, "Warning", "InvalidSpec", message)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await self.kube.delete(api_version, kind, namespace, name)
        API_WRITES.labels("delete", kind).inc()

    @staticmethod
    def event(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        kopf.event(
            obj,  # type: ignore[arg-type] # a plain dict is a body to kopf
            type=type_,
            reason=str(reason),
            message=message[:1024],
        )


def phase_events(status: Any, warn: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """The Event a status is worth: Normal once Ready, Warning in one of the `warn` phases
    (posted only when the status changed), else none."""
    if status.phase != "Ready" and status.phase not in warn:
        return []
    ready = next(x for x in status.conditions if x.type == "Ready")
    return [("Normal" if status.phase == "Ready" else "Warning", ready.reason, ready.message)]


def backoff(failures: int) -> float:
    """Seconds before retry number `failures` of one key: 0.5, 1, 2, 4 ... at most 5 minutes."""
    return min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX)


def _api_message(e: ApiException) -> str:
    import json

    try:
        body = json.loads(e.body or b"{}")
    except (ValueError, TypeError):
        body = {}
    return str(body.get("message") or e.reason or "the API server refused a child")[:2000]
