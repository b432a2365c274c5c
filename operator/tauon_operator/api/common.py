"""Shared building blocks of the Tauon API: the base model (the contract's, so spec pieces from
`tauon_runtime.contract` and the API's own are one kind of model), CEL helpers, common types.

Spec models forbid unknown fields, so a typo fails in the operator the same way `kubectl apply
--validate=strict` fails at the API server. Status models ignore unknown fields: status is
written by several hands (operator, runtime) and must never make a reader crash.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema

# The CEL helpers and patterns are the contract's; the API modules take them from here.
from tauon_runtime.contract.base import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    SHA256_HEX,
    Sha256,
    cel,
    immutable,
    rules,
)
from tauon_runtime.contract.base import ContractModel as ApiModel

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "GROUP",
    "SHA256_HEX",
    "VERSION",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "Image",
    "LocalObjectRef",
    "ObjectMeta",
    "Quantity",
    "Resources",
    "Sha256",
    "StatusModel",
    "cel",
    "conditions_field",
    "immutable",
    "observed_generation_field",
    "phase_field",
    "rules",
]

GROUP = "tauon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tauon"


class StatusModel(ApiModel):
    """Base of every status model: unknown fields are ignored, not rejected."""

    model_config = ConfigDict(extra="ignore")


# --- scalar types ------------------------------------------------------------------------------

QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity_to_str(value: Any) -> Any:
    # YAML users write `cpu: 2`; Kubernetes accepts it, so do we.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY, max_length=64),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity such as `500m`, `2`, `4Gi` (integer or string)."""

Image = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Container image override, e.g. `ghcr.io/tauon/runtime:0.1.0`. "
        "Leave unset to use the runtime image the operator was installed with.",
    ),
]


# --- shared objects ----------------------------------------------------------------------------


class LocalObjectRef(ApiModel):
    """A reference to another Tauon object in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the referenced object, in the same namespace.",
    )


class Resources(ApiModel):
    """Compute for one pod: GPUs, CPU and memory."""

    gpus: int = Field(
        0,
        ge=0,
        le=64,
        description="NVIDIA GPUs per pod (`nvidia.com/gpu`). 0 runs on CPU.",
    )
    cpu: Quantity = Field(
        "1", description="CPU requested per pod, as a Kubernetes quantity (`2`, `500m`)."
    )
    memory: Quantity = Field(
        "2Gi",
        description="Memory per pod, request and limit, as a Kubernetes quantity (`4Gi`).",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One observation of the object's state, in the shape of `metav1.Condition`."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of condition in CamelCase: Ready, Reconciling, Stalled, Succeeded, "
        "Failed.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Programmatic identifier, in CamelCase, of the reason for the last transition.",
    )
    message: str = Field(
        "",
        max_length=32768,
        description="Human-readable details about the transition.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="The metadata.generation this condition was computed from.",
    )


CONDITIONS_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def conditions_field(types: str) -> Any:
    return Field(
        default_factory=tuple,
        max_length=16,
        description=f"Latest observations of the object's state ({types}), one per type.",
        json_schema_extra=CONDITIONS_EXTRA,
    )


def observed_generation_field() -> Any:
    return Field(
        None,
        ge=0,
        description="The metadata.generation the controller last acted on. When it is lower "
        "than metadata.generation, status describes an older spec.",
    )


def phase_field(phases: type[StrEnum]) -> Any:
    names = ", ".join(p.value for p in phases)
    return Field(None, description=f"A one-word summary for humans: {names}.")


class ObjectMeta(StatusModel):
    """The part of `metadata` the operator reads."""

    name: str = Field(description="Name of the object.")
    namespace: str | None = Field(None, description="Namespace of the object.")
    uid: str | None = Field(None, description="UID of the object.")
    generation: int | None = Field(None, description="Generation of the spec.")
    resource_version: str | None = Field(None, description="Resource version.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    creation_timestamp: datetime | None = Field(None, description="Creation time.")
