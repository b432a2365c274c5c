"""An in-memory view of the objects we watch, fed by kopf's watch streams (an informer cache).

Reconciles read children from here instead of listing them from the API server on every event:
the watch already told us. Keys are (kind, namespace, name).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping


class Store:
    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict]] = defaultdict(dict)

    def observe(self, kind: str, event_type: str, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if event_type == "DELETED":
            self._objects[kind].pop(key, None)
        else:
            self._objects[kind][key] = dict(body)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._objects[kind].get((namespace, name))

    def select(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict]:
        """Objects of a kind in a namespace whose labels include all of `labels`."""
        out = []
        for (ns, _), obj in self._objects[kind].items():
            have = obj["metadata"].get("labels") or {}
            if ns == namespace and all(have.get(k) == v for k, v in labels.items()):
                out.append(obj)
        return sorted(out, key=lambda o: o["metadata"]["name"])

    def all(self, kind: str) -> Iterable[dict]:
        return list(self._objects[kind].values())

    def count(self, kind: str) -> int:
        return len(self._objects[kind])
