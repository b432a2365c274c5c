"""The three kinds as whole objects, plus what the CRD needs to know about each."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import Field, model_validator

from .common import API_VERSION, ObjectMeta, StatusModel, cel
from .dataset import DatasetSpec, DatasetStatus
from .modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .trainingjob import MAX_BACKOFF_LIMIT, MAX_WORKERS, TrainingJobSpec, TrainingJobStatus

DNS_LABEL_MAX = 63  # label values, Service names and pod hostnames
LABEL_VALUE = "the name is a label value on every child, and label values hold 63 at most"
# A worker pod's hostname is `<name>-a<attempt>-<index>` and must be a DNS label.
WORKER_SUFFIX = len(f"-a{MAX_BACKOFF_LIMIT}-{MAX_WORKERS - 1}")


@dataclass(frozen=True)
class NameRule:
    """What a kind's name must be so that every child built from it is valid.

    The API server only asks for a DNS subdomain (253 characters, dots allowed); the name also
    becomes label values (63 characters at most) and, for some kinds, the prefix of DNS labels
    (Service names, pod hostnames): those kinds need a letter first, no dots, and room for the
    longest suffix. Checked at the root of the CRD (CEL on `self.metadata.name`) and by `parse`.
    """

    max_length: int
    why_length: str  # ends the length sentence: "... at most N characters: <why>"
    dns_label: bool = False  # a letter first, then lowercase letters, digits and '-' only
    why_label: str = ""

    LABEL = r"^[a-z][-a-z0-9]*$"  # the API server already checks the end (alphanumeric)

    def messages(self, name: str) -> list[str]:
        problems = []
        if self.dns_label and not re.match(self.LABEL, name):
            problems.append(self.label_message)
        if len(name) > self.max_length:
            problems.append(self.length_message)
        return problems

    @property
    def label_message(self) -> str:
        return (
            "must start with a letter and hold only lowercase letters, digits and '-' "
            f"(no dots): {self.why_label}"
        )

    @property
    def length_message(self) -> str:
        return f"must be at most {self.max_length} characters: {self.why_length}"

    def rules(self) -> list[dict[str, Any]]:
        out = []
        if self.dns_label:
            out.append(
                cel(
                    f"self.metadata.name.matches('{self.LABEL}')",
                    self.label_message,
                    field_path=".metadata.name",
                )
            )
        out.append(
            cel(
                f"self.metadata.name.size() <= {self.max_length}",
                self.length_message,
                field_path=".metadata.name",
            )
        )
        return out


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


def _plain(value: Any) -> Any:
    """Kopf bodies are read-only Mapping views; pydantic wants plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


_PARSED: dict[tuple[str, Any, Any], Any] = {}
_PARSED_MAX = 4096

PHASE = PrinterColumn("Phase", ".status.phase", description="One-word summary of the state.")
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
MESSAGE = PrinterColumn(
    "Message",
    '.status.conditions[?(@.type=="Ready")].message',
    description="Why the object is or is not ready.",
    priority=1,
)


class Resource(StatusModel):
    """A whole custom object: apiVersion, kind, metadata, spec and status."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]]
    NAME: ClassVar[NameRule]

    api_version: str = Field(API_VERSION, description="tauon.dev/v1alpha1")
    kind: str = Field(description="The kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")

    @model_validator(mode="after")
    def _buildable_name(self) -> Self:
        if problems := self.NAME.messages(self.metadata.name):
            raise ValueError(f"metadata.name {self.metadata.name!r} " + "; ".join(problems))
        return self

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Self:
        """Validate a body as the API server (or kopf) returns it."""
        data = _plain(body)
        data.setdefault("kind", cls.KIND)
        return cls.model_validate(data)

    @classmethod
    def parse_spec(cls, body: Mapping[str, Any]) -> Any:
        """The validated spec, parsed once per object version: every builder of one reconcile
        asks for it, and an object's spec only changes with its resourceVersion. Status is not
        parsed (the operator reads it as observed data; several hands write it)."""
        meta = body.get("metadata") or {}
        key = (cls.KIND, meta.get("uid"), meta.get("resourceVersion"))
        if None in key[1:]:
            return cls.parse({k: v for k, v in body.items() if k != "status"}).spec  # type: ignore[attr-defined]
        if (spec := _PARSED.get(key)) is None:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.pop(next(iter(_PARSED)))
            spec = _PARSED[key] = cls.parse({k: v for k, v in body.items() if k != "status"}).spec  # type: ignore[attr-defined]
        return spec

    @classmethod
    def singular(cls) -> str:
        return cls.KIND.lower()


class Dataset(Resource):
    """A data set: a source (bundled, synthetic, HTTP pinned by sha256, or a PVC) prepared once
    into a versioned, split layout on a PersistentVolumeClaim. Status carries a content digest,
    per-split counts and class names."""

    KIND = "Dataset"
    PLURAL = "datasets"
    SHORT_NAMES = ("tds",)  # never `ds`: that is DaemonSet
    NAME = NameRule(DNS_LABEL_MAX, LABEL_VALUE)
    PRINTER_COLUMNS = (
        PHASE,
        PrinterColumn("Samples", ".status.counts.total", "integer", "Samples in all splits."),
        PrinterColumn(
            "Digest", ".status.digest", description="Content digest of the prepared data."
        ),
        AGE,
        MESSAGE,
    )

    spec: DatasetSpec = Field(description="The desired data set.")
    status: DatasetStatus = Field(default_factory=DatasetStatus, description="Observed state.")


class TrainingJob(Resource):
    """A training run: a model from the zoo trained on a Dataset by one or more worker pods
    (DistributedDataParallel across pods), with checkpoints, evaluation and an exported model.
    Status carries progress, metrics and the model artifact."""

    KIND = "TrainingJob"
    PLURAL = "trainingjobs"
    SHORT_NAMES = ("tj",)
    NAME = NameRule(
        DNS_LABEL_MAX - WORKER_SUFFIX,
        f"worker pod hostnames are <name>-a<attempt>-<index> (attempt up to {MAX_BACKOFF_LIMIT}, "
        f"index up to {MAX_WORKERS - 1}) and must fit in 63",
        dns_label=True,
        why_label="the workers' Service and pod hostnames are named after it",
    )
    PRINTER_COLUMNS = (
        PHASE,
        PrinterColumn("Progress", ".status.progress.percent", "number", "Percent complete."),
        PrinterColumn(
            "Accuracy",
            ".status.model.metrics.accuracy",
            "number",
            "Test accuracy of the exported model (empty until the run succeeds).",
        ),
        PrinterColumn(
            "Val-Accuracy",
            ".status.metrics.latest.accuracy",
            "number",
            "Validation accuracy of the latest epoch.",
            priority=1,
        ),
        AGE,
        PrinterColumn("Dataset", ".spec.datasetRef.name", priority=1, description="The Dataset."),
        PrinterColumn("Model", ".spec.model.architecture", priority=1, description="Architecture."),
        MESSAGE,
    )

    spec: TrainingJobSpec = Field(description="The desired training run.")
    status: TrainingJobStatus = Field(
        default_factory=TrainingJobStatus, description="Observed state."
    )


class ModelDeployment(Resource):
    """An inference service for a trained model (Open Inference Protocol v2 plus
    `/v1/predict`), with fixed or autoscaled replicas, dynamic batching, an optional canary and
    feedback collection. Status carries the URL, ready replicas and the model digest served."""

    KIND = "ModelDeployment"
    PLURAL = "modeldeployments"
    SHORT_NAMES = ("mdep",)
    NAME = NameRule(
        DNS_LABEL_MAX,
        "the Service in front of the model has the same name, and Service names hold 63 at most",
        dns_label=True,
        why_label="the Service in front of the model has the same name",
    )
    PRINTER_COLUMNS = (
        PHASE,
        PrinterColumn("Ready", ".status.replicas.ready", "integer", "Replicas ready to serve."),
        PrinterColumn(
            "Champion",
            ".status.modelDigest",
            description="Digest of the model every stable replica serves.",
        ),
        PrinterColumn(
            "Canary",
            ".status.canary.measuredPercent",
            "number",
            "Percent of prediction requests the canary answered (measured).",
        ),
        PrinterColumn("Feedback", ".status.feedbackCount", "integer", "Feedback records stored."),
        PrinterColumn(
            "Retraining",
            ".status.retraining.phase",
            priority=1,
            description="The retraining loop: Idle, Training or Canary.",
        ),
        PrinterColumn(
            "URL", ".status.url", priority=1, description="In-cluster URL of the service."
        ),
        AGE,
        MESSAGE,
    )

    spec: ModelDeploymentSpec = Field(description="The desired inference service.")
    status: ModelDeploymentStatus = Field(
        default_factory=ModelDeploymentStatus, description="Observed state."
    )


KINDS: tuple[type[Resource], ...] = (Dataset, TrainingJob, ModelDeployment)
