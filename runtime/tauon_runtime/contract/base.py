"""The base of every contract model, and the helpers that put CEL rules beside the fields.

Every model is frozen, uses camelCase aliases (Python code may use either name) and forbids
unknown fields, so a typo fails in the operator and the runtime the same way `kubectl apply
--validate=strict` fails at the API server.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SHA256_HEX = r"^[a-f0-9]{64}$"


class ContractModel(BaseModel):
    """Frozen, camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
        extra="forbid",
    )

    def to_dict(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields (what a manifest holds)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry, spelled the way the API server wants it."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, for a field or a model."""
    return {"x-kubernetes-validations": list(entries)}


def immutable(what: str, instead: str) -> dict[str, Any]:
    """A transition rule that freezes a field once the object exists."""
    return cel("self == oldSelf", f"{what} is immutable: {instead}", reason="FieldValueForbidden")


Sha256 = Annotated[
    str,
    Field(
        pattern=SHA256_HEX,
        min_length=64,
        max_length=64,
        description="SHA-256 of the content: 64 lowercase hexadecimal characters.",
    ),
]
