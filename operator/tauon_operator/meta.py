"""Names, labels and owner references of every child: one helper, never repeated by hand.

Child names are deterministic (derived from the parent's name), so a restart in the middle of a
reconcile finds what it created instead of creating it twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tauon_operator.api import API_VERSION
from tauon_runtime.contract.keys import SPEC_HASH_ANNOTATION

MANAGED_BY = "tauon"
FIELD_MANAGER = "tauon"
SPEC_HASH = SPEC_HASH_ANNOTATION
# One label per parent kind lets a child event find its parent without an API call.
PARENT_LABEL = {
    "Dataset": "tauon.dev/dataset",
    "TrainingJob": "tauon.dev/trainingjob",
    "ModelDeployment": "tauon.dev/modeldeployment",
}
MAX_NAME = 63


def child_name(parent: str, suffix: str) -> str:
    """`<parent>-<suffix>`, shortened with a stable hash when it would pass 63 characters."""
    name = f"{parent}-{suffix}" if suffix else parent
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{parent[:keep].rstrip('-')}-{digest}-{suffix}"


def labels(kind: str, name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tauon",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tauon",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        PARENT_LABEL[kind]: name,
    }


def owner_reference(parent: Mapping[str, Any]) -> dict[str, Any]:
    meta = parent["metadata"]
    return {
        "apiVersion": parent.get("apiVersion", API_VERSION),
        "kind": parent["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    parent: Mapping[str, Any],
    name: str,
    component: str,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    pm = parent["metadata"]
    return {
        "name": name,
        "namespace": pm["namespace"],
        "labels": {**labels(parent["kind"], pm["name"], component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(parent)],
    }


def spec_hash(obj: Mapping[str, Any]) -> str:
    """A digest of what we want a child to be; applied only when it changes (no no-op writes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})[SPEC_HASH] = spec_hash(obj)
    return obj
