"""An in-memory view of the objects we watch, fed by kopf's watch streams (an informer cache).

Reconciles read children from here instead of listing them from the API server on every event:
the watch already told us. Objects are indexed by namespace, and children also by the label
that names their parent, so a reconcile looks at its own children only.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from tauon_operator.meta import PARENT_LABEL
from tauon_operator.queueing import JOB_UID_LABEL

# The labels the cache indexes: a child's parent, and the Job a Kueue Workload stands for.
_INDEXED = (*PARENT_LABEL.values(), JOB_UID_LABEL)


def _version(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(obj["metadata"].get("resourceVersion", ""))
    except ValueError:  # opaque by contract; etcd's are integers, and then newer wins
        return None


# What a kind's cached copy leaves out: nothing reads it, and a pod's spec (containers, env,
# volumes) is most of its size. Pods are the Job's and the ReplicaSet's to build, not ours.
_UNREAD: dict[str, tuple[str, ...]] = {"Pod": ("spec",)}


def _compact(value: Any) -> Any:
    """A copy sharing one string object per distinct key and short value across the whole
    cache (sys.intern): each decoded watch event brings its own copies of "metadata", "spec",
    "app.kubernetes.io/managed-by", the image name …, and at 1,000 TrainingJobs those copies
    are half of the cache's memory."""
    if isinstance(value, dict):
        return {sys.intern(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, str) and len(value) <= _INTERNED_LENGTH:
        return sys.intern(value)
    return value


_INTERNED_LENGTH = 64  # names, labels, images, quantities; not messages or certificates


def _cached(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    unread = _UNREAD.get(kind, ())
    obj = {k: _compact(v) for k, v in body.items() if k not in unread and k != "metadata"}
    obj["metadata"] = _compact({k: v for k, v in meta.items() if k != "managedFields"})
    return obj


class Store:
    def __init__(self) -> None:
        # kind -> namespace -> name -> object
        self._objects: dict[str, dict[str, dict[str, dict]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        # (kind, namespace, label, value) -> names
        self._by_label: dict[tuple, set[str]] = defaultdict(set)

    def observe(self, kind: str, event_type: str, body: Mapping[str, Any]) -> bool:
        """Records what a watch event or an API response said; an older version never
        replaces a newer one (a write's response may arrive before its watch event). Returns
        whether the cache learnt something new (False for the watch echo of our own write)."""
        meta = body["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        old = self._objects[kind][ns].get(name)
        if event_type == "DELETED":
            self._objects[kind][ns].pop(name, None)
            self._unindex(kind, ns, old)
            return True
        have, new = (_version(old) if old is not None else None), _version(body)
        if have is not None and new is not None and new <= have:
            return False
        obj = _cached(kind, body)
        self._unindex(kind, ns, old)
        self._objects[kind][ns][name] = obj
        for label in _INDEXED:
            if value := (obj["metadata"].get("labels") or {}).get(label):
                self._by_label[(kind, ns, label, value)].add(name)
        return True

    def _unindex(self, kind: str, ns: str, obj: dict | None) -> None:
        if obj is None:
            return
        for label in _INDEXED:
            if value := (obj["metadata"].get("labels") or {}).get(label):
                self._by_label[(kind, ns, label, value)].discard(obj["metadata"]["name"])

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._objects[kind][namespace].get(name)

    def select(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict]:
        """Objects of a kind in a namespace whose labels include all of `labels`."""
        objects = self._objects[kind][namespace]
        key = next((k for k in labels if k in _INDEXED), None)
        names = self._by_label[(kind, namespace, key, labels[key])] if key else objects.keys()
        out = []
        for name in names:
            obj = objects.get(name)
            have = (obj or {}).get("metadata", {}).get("labels") or {}
            if obj is not None and all(have.get(k) == v for k, v in labels.items()):
                out.append(obj)
        return sorted(out, key=lambda o: o["metadata"]["name"])

    def keys(self, kind: str, namespace: str | None = None) -> set[str]:
        """ "namespace/name" of every object of a kind (in one namespace, or all)."""
        return {
            f"{ns}/{name}"
            for ns, by_name in self._objects[kind].items()
            if namespace is None or ns == namespace
            for name in by_name
        }

    def all(self, kind: str) -> Iterable[dict]:
        return [o for by_name in self._objects[kind].values() for o in by_name.values()]

    def count(self, kind: str) -> int:
        return sum(len(by_name) for by_name in self._objects[kind].values())
