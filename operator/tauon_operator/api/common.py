"""Shared building blocks of the Tauon API: the base model (the contract's, so spec pieces from
`tauon_runtime.contract` and the API's own are one kind of model), CEL helpers, common types.

Spec models forbid unknown fields, so a typo fails in the operator the same way `kubectl apply
--validate=strict` fails at the API server. Status models ignore unknown fields: status is
written by several hands (operator, runtime) and must never make a reader crash.
"""

from __future__ import annotations

import re
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
    "INT32_MAX",
    "POSITIVE_QUANTITY",
    "SHA256_HEX",
    "UNOBSERVED_STATUS",
    "VERSION",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "CpuQuantity",
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
    "quantity_value",
    "rules",
]

GROUP = "tauon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tauon"
INT32_MAX = 2**31 - 1  # the bound of every field copied into an int32 of a Kubernetes object
# What the API server fills in as status until the operator writes one: generation 1 is not
# observed yet, so kstatus (Flux, kpt) reads a fresh object as InProgress, not Current.
UNOBSERVED_STATUS: dict[str, Any] = {"observedGeneration": 0}


class StatusModel(ApiModel):
    """Base of every status model: unknown fields are ignored, not rejected."""

    model_config = ConfigDict(extra="ignore")


# --- scalar types ------------------------------------------------------------------------------

# A Kubernetes quantity above zero: no sign but `+`, at least one non-zero digit, then a binary
# (Ki..Ei) or decimal (n, u, m, k, M..E) suffix or an integer exponent (what ParseQuantity takes).
POSITIVE_QUANTITY = (
    r"^\+?([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)"
    r"([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
)
QUANTITY_MESSAGE = "must be a quantity above zero, such as 500m, 2 or 4Gi"


def _positive_quantity(value: Any, *, numbers: type | tuple[type, ...] = int) -> str:
    # YAML users write `memory: 4294967296` or `cpu: 0.5`; Pods take both, so do we.
    if isinstance(value, bool) or not isinstance(value, (str, numbers)):
        raise ValueError(QUANTITY_MESSAGE)
    text = repr(value) if isinstance(value, float) else str(value)
    if not re.match(POSITIVE_QUANTITY, text):
        raise ValueError(QUANTITY_MESSAGE)
    return text


_SUFFIX = {
    "": 1,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    **{f"{p}i": 1024.0 ** (i + 1) for i, p in enumerate("KMGTPE")},
}


def quantity_value(text: str) -> float:
    """The value of a valid quantity (`1.5Gi` -> 1610612736.0), as CEL's asApproximateFloat."""
    number, suffix, exponent = re.fullmatch(
        r"\+?([0-9.]+)([KMGTPE]i|[numkMGTPE]?)(?:[eE]([-+]?[0-9]+))?", text
    ).groups()  # type: ignore[union-attr]
    return float(number) * _SUFFIX[suffix] * 10.0 ** int(exponent or 0)


Quantity = Annotated[
    str,
    BeforeValidator(_positive_quantity),
    Field(max_length=64),
    WithJsonSchema(
        {
            # int-or-string, as Kubernetes spells quantities; no `anyOf: [integer, string]`
            # branches (each would repeat the type error) and no pattern: CEL says what is wrong
            # in one sentence.
            "x-kubernetes-int-or-string": True,
            "maxLength": 64,
            "x-kubernetes-validations": [
                cel(
                    "type(self) == int ? self > 0 : "
                    "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
                    QUANTITY_MESSAGE,
                )
            ],
        }
    ),
]
"""A Kubernetes quantity above zero, such as `4Gi` or `4294967296` (integer or string)."""

CpuQuantity = Annotated[
    str,
    BeforeValidator(lambda v: _positive_quantity(v, numbers=(int, float))),
    Field(max_length=64),
    WithJsonSchema(
        {
            # CPU is written as a fraction as often as in millicores (`cpu: 0.5`), and Pods take
            # the number. A CRD can only say "number or string" with an untyped node, which CEL
            # cannot see, so the checks are per type: the pattern for strings, the minimum for
            # numbers, and `not` of a schema that only a non-string non-number (a boolean, an
            # object, a list) satisfies.
            "x-kubernetes-preserve-unknown-fields": True,
            "maxLength": 64,
            "pattern": POSITIVE_QUANTITY,
            "minimum": 0,
            "exclusiveMinimum": True,
            "not": {"minLength": 1, "maxLength": 0, "minimum": 1, "maximum": 0},
        }
    ),
]
"""A CPU quantity above zero: `500m`, `2`, or a number such as `0.5`."""

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
        max_length=63,  # no Tauon object's name is longer (they are label values)
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
    cpu: CpuQuantity = Field(
        "1", description="CPU requested per pod, as a Kubernetes quantity (`2`, `500m`, `0.5`)."
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
