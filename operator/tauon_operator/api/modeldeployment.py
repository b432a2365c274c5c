"""ModelDeployment: which model to serve, how many replicas, and what is being served."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from tauon_runtime.contract.serve import Batching, Feedback, ModelFormat

from .code import CodeSource
from .common import (
    DNS_SUBDOMAIN,
    ApiModel,
    Condition,
    CpuQuantity,
    Image,
    LocalObjectRef,
    Quantity,
    Resources,
    Sha256,
    StatusModel,
    cel,
    conditions_field,
    observed_generation_field,
    phase_field,
    rules,
)
from .core import NodeLabels, affinity_field, node_selector_field, tolerations_field
from .retraining import Retraining, RetrainingStatus

# Where a model can be served from. pvc://<claim>[/<path>]: a PersistentVolumeClaim in the same
# namespace (a DNS subdomain), mounted read-only. s3://<bucket>/<key>/ and https://<host>/<path>/:
# a version published to object storage (a manifest and its files), fetched and verified by the
# serving pod's storage initializer, from any namespace or cluster.
PVC_URI = "^pvc://" + DNS_SUBDOMAIN.strip("^$") + r"(/\S*)?$"
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$"
HTTPS_URI = r"^https://[^/\s]+/\S*$"
MODEL_URI_MESSAGE = (
    "must be pvc://<claim>/<path> (a PersistentVolumeClaim in this namespace), "
    "s3://<bucket>/<key> or https://<host>/<path> (a model version in object storage)"
)
S3_URI_MESSAGE = (
    "an s3:// URI must name a bucket and a key: s3://<bucket>/<key> (bucket: 3-63 lowercase "
    "letters, digits, dots and hyphens)"
)


class ModelSource(ApiModel):
    """The model to serve: a TrainingJob's output, or a file pinned by sha256."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "has(self.trainingJobRef) != has(self.uri)",
                "set exactly one of trainingJobRef or uri",
            ),
            cel(
                "has(self.uri) == has(self.sha256)",
                "sha256 is required with uri, and only with uri",
                field_path=".sha256",
            ),
        )
    }

    training_job_ref: LocalObjectRef | None = Field(
        None,
        description="Serve the model of this TrainingJob (same namespace), and follow it: a "
        "new model from the job rolls out automatically.",
    )
    uri: str | None = Field(
        None,
        max_length=2048,
        description="Location of the model. `pvc://<claim>/<path>`: a model directory or "
        "safetensors file on a PersistentVolumeClaim in the same namespace. "
        "`s3://<bucket>/<key>` or `https://<host>/<path>`: a model version in object storage "
        "(its manifest.json and files, as a TrainingJob publishes them to the artifact store), "
        "from any namespace or cluster; the serving pods download it with the store's "
        "credentials Secret and verify every file before they start.",
        json_schema_extra=rules(
            cel(
                "!self.startsWith('s3:') || self.matches(r'" + S3_URI + "')",
                S3_URI_MESSAGE,
            ),
            cel(
                f"self.matches(r'{PVC_URI}') || self.matches(r'{S3_URI}') || "
                f"self.matches(r'{HTTPS_URI}') || self.startsWith('s3:')",
                MODEL_URI_MESSAGE,
            ),
        ),
    )
    sha256: Sha256 | None = Field(
        None,
        description="Required with uri: SHA-256 of the weights (status.model.sha256 of the "
        "TrainingJob that made them); a mismatch is not served.",
    )
    format: ModelFormat = Field(
        "safetensors",
        description="Which exported file to serve. `safetensors`: the weights, in PyTorch (the "
        "runtime image). `onnx`: the ONNX export beside them (model.onnx, recorded with its "
        "check against PyTorch in the model card's `onnx`), run by onnxruntime on CPU without "
        "torch, in the small runtime-edge image.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.training_job_ref is None) == (self.uri is None):
            raise ValueError("set exactly one of trainingJobRef or uri")
        if (self.uri is None) != (self.sha256 is None):
            raise ValueError("sha256 is required with uri, and only with uri")
        return self

    @field_validator("uri")
    @classmethod
    def _model_uri(cls, uri: str | None) -> str | None:
        if uri is not None and uri.startswith("s3:") and not re.match(S3_URI, uri):
            raise ValueError(S3_URI_MESSAGE)
        if uri is not None and not any(re.match(p, uri) for p in (PVC_URI, S3_URI, HTTPS_URI)):
            raise ValueError(MODEL_URI_MESSAGE)
        return uri


PREDICTOR_CLASS = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class Predictor(ApiModel):
    """Your own predictor class, for a model your own code trained (KServe's custom model):
    `load(model_dir)` once, then `predict(instances) -> outputs`, one output per instance,
    behind the same endpoints, batching, metrics and feedback (docs/own-code.md)."""

    class_name: str = Field(
        min_length=3,
        max_length=256,
        pattern=PREDICTOR_CLASS,
        description="`module:Class`, imported from code (or the image), e.g. "
        "`predictor:Generator`.",
    )
    code: CodeSource | None = Field(
        None,
        description="Where the module comes from: a ConfigMap or a claim mounted read-only at "
        "/code. Unset: the image has it.",
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on CPU utilisation."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must be less than or equal to maxReplicas",
                field_path=".minReplicas",
            )
        )
    }

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    target_cpu_utilization_percentage: int = Field(
        80,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU utilisation, in percent of the request, to scale at.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        return self


class ServingResources(Resources):
    """Compute for one inference pod: GPUs, CPU and memory."""

    cpu: CpuQuantity = Field(
        "500m", description="CPU requested per pod, as a Kubernetes quantity (`1`, `500m`, `0.5`)."
    )
    memory: Quantity = Field(
        "1Gi", description="Memory per pod, request and limit, as a Kubernetes quantity (`2Gi`)."
    )


class Canary(ApiModel):
    """A second model that receives an exact share of the prediction requests: the stable
    servers forward it to the canary's own Service, whatever the replica counts."""

    model: ModelSource = Field(description="The canary model (same choices as spec.model).")
    traffic_percent: int = Field(
        10,
        ge=0,
        le=100,
        description="Percent of prediction requests sent to the canary, 0-100 (exactly: 20 is "
        "every fifth request of each stable server).",
    )


# The edge image has onnxruntime's CPU build only: GPUs would be requested and never used.
ONNX_ON_CPU_RULE = (
    "self.resources.gpus == 0 || (self.model.format != 'onnx' && "
    "(!has(self.canary) || self.canary.model.format != 'onnx'))"
)
ONNX_ON_CPU_MESSAGE = (
    "format onnx is served on CPU (the runtime-edge image has no CUDA): set resources.gpus to 0"
)


RETRAINING_RECIPE_MESSAGE = (
    "retraining trains from the recipe of spec.model.trainingJobRef: set it (not a uri)"
)
RETRAINING_CANARY_MESSAGE = "retraining runs its own canaries: remove spec.canary"
RETRAINING_FEEDBACK_MESSAGE = "retraining learns from feedback: set feedback.enabled to true"


PREDICTOR_FORMAT_MESSAGE = (
    "a predictor class loads the safetensors weights itself: model.format must be safetensors"
)
PREDICTOR_RETRAINING_MESSAGE = (
    "retraining trains a built-in model on the feedback: it does not go with a predictor class"
)


class ModelDeploymentSpec(ApiModel):
    """The desired inference service."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "!has(self.replicas) || !has(self.autoscaling)",
                "set replicas or autoscaling, not both",
                field_path=".replicas",
            ),
            cel(
                ONNX_ON_CPU_RULE,
                ONNX_ON_CPU_MESSAGE,
                field_path=".resources.gpus",
            ),
            cel(
                "!has(self.retraining) || has(self.model.trainingJobRef)",
                RETRAINING_RECIPE_MESSAGE,
                field_path=".retraining",
            ),
            cel(
                "!has(self.retraining) || !has(self.canary)",
                RETRAINING_CANARY_MESSAGE,
                field_path=".canary",
            ),
            cel(
                "!has(self.predictor) || (self.model.format != 'onnx' && "
                "(!has(self.canary) || self.canary.model.format != 'onnx'))",
                PREDICTOR_FORMAT_MESSAGE,
                field_path=".predictor",
            ),
            cel(
                "!has(self.predictor) || !has(self.retraining)",
                PREDICTOR_RETRAINING_MESSAGE,
                field_path=".retraining",
            ),
            cel(
                "!has(self.retraining) || self.feedback.enabled",
                RETRAINING_FEEDBACK_MESSAGE,
                field_path=".feedback.enabled",
            ),
        )
    }

    model: ModelSource = Field(
        description="The model to serve: exactly one of trainingJobRef, or uri plus sha256."
    )
    predictor: Predictor | None = Field(
        None,
        description="Serve the model through your own predictor class instead of the "
        "built-in classifier (for a model your own training code exported): the server calls "
        "its load(model_dir) once, then predict(instances) with each batch, behind the same "
        "endpoints, batching, metrics and feedback (docs/own-code.md).",
    )
    replicas: int | None = Field(
        None, ge=0, le=1000, description="Fixed number of replicas. Unset: 1, or autoscaling."
    )
    autoscaling: Autoscaling | None = Field(
        None, description="Scale on CPU utilisation instead of a fixed replica count."
    )
    resources: ServingResources = Field(
        default_factory=ServingResources, description="GPUs, CPU and memory of each inference pod."
    )
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching settings.")
    canary: Canary | None = Field(None, description="Send part of the traffic to a second model.")
    feedback: Feedback = Field(default_factory=Feedback, description="User feedback collection.")
    retraining: Retraining | None = Field(
        None,
        description="Close the loop: retrain on the feedback when a trigger fires, gate the "
        "challenger against the champion, serve it as a canary, then promote it or roll it "
        "back (docs/closed-loop.md).",
    )
    tolerations: tuple[dict[str, Any], ...] | None = tolerations_field("inference pods")
    node_selector: NodeLabels | None = node_selector_field("inference pods")
    affinity: dict[str, Any] | None = affinity_field("inference pods")
    priority_class_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PriorityClass of the inference pods. Unset: the cluster's default priority.",
    )
    image: Image | None = None

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> ModelDeploymentSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set replicas or autoscaling, not both")
        return self

    @model_validator(mode="after")
    def _onnx_on_cpu(self) -> ModelDeploymentSpec:
        formats = {self.model.format, self.canary.model.format if self.canary else "safetensors"}
        if "onnx" in formats and self.resources.gpus:
            raise ValueError(ONNX_ON_CPU_MESSAGE)
        return self

    @model_validator(mode="after")
    def _predictor(self) -> ModelDeploymentSpec:
        if self.predictor is None:
            return self
        formats = {self.model.format, self.canary.model.format if self.canary else "safetensors"}
        if "onnx" in formats:
            raise ValueError(PREDICTOR_FORMAT_MESSAGE)
        if self.retraining is not None:
            raise ValueError(PREDICTOR_RETRAINING_MESSAGE)
        return self

    @model_validator(mode="after")
    def _retraining(self) -> ModelDeploymentSpec:
        if self.retraining is None:
            return self
        if self.model.training_job_ref is None:
            raise ValueError(RETRAINING_RECIPE_MESSAGE)
        if self.canary is not None:
            raise ValueError(RETRAINING_CANARY_MESSAGE)
        if not self.feedback.enabled:
            raise ValueError(RETRAINING_FEEDBACK_MESSAGE)
        return self

    @property
    def desired_replicas(self) -> int:
        """Replicas to run when not autoscaling (1 when unset)."""
        return 1 if self.replicas is None else self.replicas


# --- status --------------------------------------------------------------------------------------


class ModelDeploymentPhase(StrEnum):
    PENDING = "Pending"  # waiting for the model
    PROGRESSING = "Progressing"  # rolling out
    READY = "Ready"  # every replica serves the right digest
    DEGRADED = "Degraded"  # rolled out before, but replicas fail now
    FAILED = "Failed"  # cannot serve: no model, or the model is refused


class ReplicaCounts(StatusModel):
    """Replicas of the main (non-canary) Deployment."""

    desired: int | None = Field(None, ge=0, description="Replicas wanted.")
    ready: int | None = Field(None, ge=0, description="Replicas ready to serve.")
    updated: int | None = Field(None, ge=0, description="Replicas running the current model.")


class CanaryStatus(StatusModel):
    """What the canary serves."""

    model_digest: str | None = Field(None, description="Digest of the canary model.")
    ready_replicas: int | None = Field(None, ge=0, description="Canary replicas ready.")
    traffic_percent: int | None = Field(
        None, ge=0, le=100, description="Percent of prediction requests it is to get."
    )
    measured_percent: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Percent of prediction requests it answered, as the stable servers counted "
        "them (since each started).",
    )
    measured_requests: int | None = Field(
        None, ge=0, description="Prediction requests that measurement counts."
    )


class ModelVersionState(StrEnum):
    CHAMPION = "Champion"  # every stable replica serves it
    CANARY = "Canary"  # the canary track serves it
    REJECTED = "Rejected"  # a retraining challenger that failed the gate or its canary
    RETIRED = "Retired"  # it served, and no longer does


class ModelVersion(StatusModel):
    """One model version this ModelDeployment served: where it came from, how it did."""

    digest: str = Field(description="Its sha256.")
    state: ModelVersionState = Field(description="Champion, Canary, Rejected or Retired.")
    since: datetime = Field(description="When it reached this state.")
    reason: str | None = Field(None, description="Why it is in this state.")
    training_job: str | None = Field(None, description="The TrainingJob that exported it.")
    dataset_digest: str | None = Field(None, description="The Dataset version it was trained on.")
    test_accuracy: float | None = Field(
        None, ge=0, le=1, description="Its accuracy on that version's test split (offline)."
    )
    live_accuracy: float | None = Field(
        None, ge=0, le=1, description="Its accuracy on the labelled feedback it received (live)."
    )
    live_feedback: int | None = Field(
        None, ge=0, description="Labelled feedback records that accuracy counts."
    )


class ModelDeploymentStatus(StatusModel):
    """What is being served, where, and the conditions of the ModelDeployment."""

    observed_generation: int | None = observed_generation_field()
    phase: ModelDeploymentPhase | None = phase_field(ModelDeploymentPhase)
    conditions: tuple[Condition, ...] = conditions_field("Ready, Reconciling, Stalled")
    url: str | None = Field(None, description="In-cluster URL of the inference service.")
    replicas: ReplicaCounts | None = Field(None, description="Desired, ready and updated replicas.")
    model_digest: str | None = Field(None, description="Digest (sha256) of the model being served.")
    canary: CanaryStatus | None = Field(None, description="The canary, when one is configured.")
    feedback_count: int | None = Field(
        None, ge=0, description="Feedback records stored (every replica's, within the retention)."
    )
    feedback_accuracy: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of the labelled feedback whose true label was the predicted one.",
    )
    models: tuple[ModelVersion, ...] = Field(
        (),
        max_length=12,
        description="The model versions served, oldest first (the last 10 retired or rejected "
        "ones, and the champion and the canary): lineage, offline and live accuracy, and state.",
    )
    retraining: RetrainingStatus | None = Field(
        None, description="The retraining loop: its phase, champion, challenger and decisions."
    )
