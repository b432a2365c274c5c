"""A team's own code, with no image to build: a ConfigMap or a claim mounted read-only at
`/code`, for a TrainingJob's command and a ModelDeployment's predictor class."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from .common import DNS_SUBDOMAIN, ApiModel, cel, rules

CODE_MOUNT = "/code"
COMMAND_ITEMS = 64

Argument = Annotated[str, Field(max_length=4096)]


class ConfigMapCode(ApiModel):
    """Code in a ConfigMap of the same namespace: each key is a file under /code."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the ConfigMap (`kubectl create configmap NAME --from-file=train.py`).",
    )


class ClaimCode(ApiModel):
    """Code on a PersistentVolumeClaim of the same namespace, mounted read-only."""

    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,  # as a Dataset's pvc source takes it
        description="Name of the PersistentVolumeClaim.",
    )


class CodeSource(ApiModel):
    """Where the code comes from: exactly one of configMap or persistentVolumeClaim. It is
    mounted read-only at /code, which is the working directory and on PYTHONPATH."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "has(self.configMap) != has(self.persistentVolumeClaim)",
                "set exactly one of configMap or persistentVolumeClaim",
                field_path=".configMap",
            )
        )
    }

    config_map: ConfigMapCode | None = Field(None, description="Code in a ConfigMap.")
    persistent_volume_claim: ClaimCode | None = Field(
        None, description="Code on a PersistentVolumeClaim."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CodeSource:
        if (self.config_map is None) == (self.persistent_volume_claim is None):
            raise ValueError("code: set exactly one of configMap or persistentVolumeClaim")
        return self

    def volume(self) -> dict[str, object]:
        """The pod volume named `code`."""
        if self.config_map is not None:
            return {"name": "code", "configMap": {"name": self.config_map.name}}
        assert self.persistent_volume_claim is not None
        return {
            "name": "code",
            "persistentVolumeClaim": {
                "claimName": self.persistent_volume_claim.claim_name,
                "readOnly": True,
            },
        }
