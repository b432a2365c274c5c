"""Kubernetes core/v1 types the API passes through to pods unchanged (tolerations, affinity),
with the API server's own schemas (vendored in core_v1_schemas.json by
hack/vendor-core-schemas.py from the pinned kube-apiserver's /openapi/v3).

A field carries `core_type(NAME)` in its JSON Schema; crdgen puts the structural form of that
schema in its place, so `kubectl apply` checks a toleration or an affinity exactly as it checks
one in a pod, and `kubectl explain` describes it the same way. The operator does not model
these types: what the API server accepted is copied into the pod template as it is."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import StringConstraints

CORE_TYPE = "x-tauon-core-type"
TOLERATION = "io.k8s.api.core.v1.Toleration"
AFFINITY = "io.k8s.api.core.v1.Affinity"
# What a CRD schema may carry of the API server's schema (no defaults: what the user wrote is
# what the pod gets; strategic-merge hints mean nothing to a custom resource).
_KEEP = {
    "description",
    "type",
    "format",
    "enum",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}


def core_type(name: str) -> dict[str, Any]:
    """The json_schema_extra of a field whose items (or value) are the core type `name`."""
    return {CORE_TYPE: name}


@cache
def _schemas() -> dict[str, Any]:
    data = json.loads((Path(__file__).with_name("core_v1_schemas.json")).read_text())
    return dict(data["schemas"])


def structural(name: str) -> dict[str, Any]:
    """The core type's schema as a CRD embeds it: references inlined, only structural keys."""
    return _convert(copy.deepcopy(_schemas()[name]))


# Bounds the API server's schemas leave out (a pod's size limit bounds them there): with them the
# CEL rules of our specs keep a bounded cost, as every other string and list of the API has.
MAX_ITEMS, MAX_LENGTH = 64, 1024


def _convert(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node or "allOf" in node:
        [ref] = [node["$ref"]] if "$ref" in node else [s["$ref"] for s in node["allOf"]]
        target = _convert(copy.deepcopy(_schemas()[ref.rsplit("/", 1)[-1]]))
        if "description" in node:  # the field's own words win over the type's
            target["description"] = node["description"]
        return target
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {k: _convert(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value)
        else:
            out[key] = value
    if out.get("type") == "string" and "enum" not in out and "format" not in out:
        out["maxLength"] = MAX_LENGTH
    if out.get("type") == "array":
        out["maxItems"] = MAX_ITEMS
    return out


def embed(node: dict[str, Any]) -> dict[str, Any]:
    """A field's schema with its core type put in: a list of them or one."""
    name = node[CORE_TYPE]
    inner = structural(name)
    if node.get("type") == "array":
        out = {
            "type": "array",
            "items": inner,
            "maxItems": MAX_ITEMS,
            "x-kubernetes-list-type": "atomic",
        }
    else:
        out = inner
    if "description" in node:
        out["description"] = node["description"]
    return out


# --- the placement fields of training and serving pods ------------------------------------------


def tolerations_field(pods: str) -> Any:
    from pydantic import Field

    return Field(
        None,
        description=f"Tolerations of the {pods} (core/v1 Toleration, as in a pod spec), added to "
        "the operator's defaults for GPU pods (the chart's `gpuTolerations`, usually the "
        "`nvidia.com/gpu` taint of GPU nodes). Unset: the defaults only.",
        json_schema_extra=core_type(TOLERATION),
    )


# A nodeSelector: label keys to label values (a label value is at most 63 characters).
NodeLabels = dict[str, Annotated[str, StringConstraints(max_length=63)]]


def node_selector_field(pods: str) -> Any:
    from pydantic import Field

    return Field(
        None,
        max_length=MAX_ITEMS,
        description=f"Node labels the {pods} must match (a pod's nodeSelector). Unset: any node.",
    )


def affinity_field(pods: str) -> Any:
    from pydantic import Field

    return Field(
        None,
        description=f"Node and pod affinity of the {pods} (core/v1 Affinity, as in a pod spec). "
        "Unset: none.",
        json_schema_extra=core_type(AFFINITY),
    )
