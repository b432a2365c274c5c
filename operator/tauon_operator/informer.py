"""Informers for the kinds the operator creates: list, then watch from the list's
resourceVersion, for ever (client-go's reflector), feeding the cache.

Why not kopf's watches: kopf runs its whole per-object machinery (a worker, a memory, a
logger, patches) for every event of every watched kind, and the operator's children make most
of the events (200 TrainingJobs: ~2,400). A child event needs only the cache updated and,
when it matters, its parent enqueued (handlers/watch.py). So each kind is one thread that
reads its watch stream and hands every event to the event loop; kopf keeps the custom
resources, whose events it handles.

A thread, not a coroutine: the official client is blocking, and a stream blocks its reader
for minutes. Informers use their own connection pool, so a watch never holds a connection a
reconcile needs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from tauon_operator.kube import Kube

log = logging.getLogger("tauon.informer")
# (kind, event type, object): called on the event loop. A relist reports what vanished
# meanwhile as DELETED, so the cache never keeps an object the cluster lost. The first list
# arrives as LISTED: the cache is being filled, and nothing may be reconciled on it yet.
Handler = Callable[[str, str, dict[str, Any]], None]
LISTED = "LISTED"
RETRY_SECONDS = 1.0


class Informer:
    def __init__(
        self,
        kube: Kube,
        loop: asyncio.AbstractEventLoop,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        handler: Handler,
        known: Callable[[], set[str]],
    ):
        """`known()`: the (namespace/)names of this kind the cache holds now, for a relist."""
        self.kube, self.loop = kube, loop
        self.api_version, self.kind = api_version, kind
        self.namespace, self.selector = namespace, label_selector
        self.handler, self.known = handler, known
        self.synced = threading.Event()
        self._stop = threading.Event()
        where = namespace or "all namespaces"
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{kind}-{where}", daemon=True
        )

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                for event in self.kube.watch_sync(
                    self.api_version, self.kind, self.namespace, rv, self.selector
                ):
                    if self._stop.is_set():
                        return
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:  # too old: list again
                            rv = ""
                        else:
                            log.warning("watch %s: %s", self.kind, obj.get("message"))
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event.get("type") != "BOOKMARK":
                        obj.setdefault("apiVersion", self.api_version)
                        obj.setdefault("kind", self.kind)
                        self._deliver(event["type"], obj)
            except RuntimeError:  # the event loop is closed: the operator stopped
                return
            except ApiException as e:
                if e.status == 410:
                    rv = ""
                log.warning("watch %s: API error %s; retrying", self.kind, e.status)
                time.sleep(RETRY_SECONDS)
            except Exception as e:
                log.info("watch %s ended (%s); resuming in %.0f s", self.kind, e, RETRY_SECONDS)
                time.sleep(RETRY_SECONDS)

    def _list(self) -> str:
        items, rv = self.kube.list_objects_sync(
            self.api_version, self.kind, self.namespace, self.selector
        )
        listed = {_key(o) for o in items}
        before = asyncio.run_coroutine_threadsafe(_call(self.known), self.loop).result()
        for key in before - listed:
            ns, _, name = key.rpartition("/")
            gone = {"kind": self.kind, "metadata": {"namespace": ns, "name": name}}
            self._deliver("DELETED", gone)
        first = not self.synced.is_set()
        for obj in items:
            self._deliver(LISTED if first else "ADDED", obj)
        # Synced once the loop has taken every listed object in (callbacks run in order).
        done = threading.Event()
        self.loop.call_soon_threadsafe(done.set)
        done.wait()
        self.synced.set()
        return rv

    def _deliver(self, type_: str, obj: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self.handler, self.kind, type_, obj)


async def _call(fn: Callable[[], set[str]]) -> set[str]:
    return fn()


def _key(obj: dict[str, Any]) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


async def wait_synced(informers: list[Informer], timeout: float = 300) -> None:
    """Until every informer has delivered its first list (WaitForCacheSync)."""
    deadline = time.monotonic() + timeout
    for inf in informers:
        left = max(0.0, deadline - time.monotonic())
        if not await asyncio.to_thread(inf.synced.wait, left):
            raise TimeoutError(f"the {inf.kind} informer did not sync in {timeout:.0f}s")
