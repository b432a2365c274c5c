"""Dataset: where the data comes from, how it is split and prepared, and what came out."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from tauon_runtime.contract.data import (
    BUILTIN_TASK,
    FORMAT_DESCRIPTION,
    TABULAR_BUILTINS,
    TASK_DESCRIPTION,
    TEXT_BUILTINS,
    BuiltinSource,
    Columns,
    DatasetFormat,
    DatasetSource,
    HttpSource,
    Preprocessing,
    PvcSource,
    S3Source,
    Splits,
    SyntheticSource,
    Task,
)

from .common import (
    DNS_SUBDOMAIN,
    ApiModel,
    Condition,
    Quantity,
    StatusModel,
    cel,
    conditions_field,
    immutable,
    observed_generation_field,
    phase_field,
    quantity_value,
    rules,
)

__all__ = [
    "BuiltinSource",
    "DatasetFormat",
    "DatasetSource",
    "DatasetSpec",
    "DatasetStatus",
    "HttpSource",
    "Preprocessing",
    "PvcSource",
    "S3Source",
    "SplitCounts",
    "Splits",
    "Storage",
    "SyntheticSource",
]


class Storage(ApiModel):
    """The PersistentVolumeClaim that holds the prepared data."""

    size: Quantity = Field("1Gi", description="Size of the claim, e.g. `1Gi`.")
    storage_class_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="StorageClass of the claim. Unset uses the cluster's default class.",
    )


SYNTHETIC_BYTES = (
    "self.source.synthetic.numSamples * self.source.synthetic.shape[0] * "
    "(has(self.preprocessing.resize) ? self.preprocessing.resize * self.preprocessing.resize "
    ": self.source.synthetic.shape[1] * self.source.synthetic.shape[2])"
)
SYNTHETIC_FITS = (
    "synthetic data (numSamples x channels x height x width bytes) must fit in storage.size"
)


class DatasetSpec(ApiModel):
    """The desired data set: a source, and how to split and prepare it."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                # An invalid shape or size is that field's own error, not this one's.
                "!has(self.source.synthetic) || self.source.synthetic.shape.size() != 3 || "
                "!isQuantity(string(self.storage.size)) || "
                f"double({SYNTHETIC_BYTES}) <= "
                "quantity(string(self.storage.size)).asApproximateFloat()",
                SYNTHETIC_FITS,
                field_path=".storage.size",
            ),
            cel(
                "self.task == 'tabular-classification' || !has(self.source.builtin) || "
                f"!(self.source.builtin.name in {list(TABULAR_BUILTINS)})",
                "builtin wine and breast_cancer are tabular: set task: tabular-classification",
                field_path=".task",
            ),
            cel(
                "self.task != 'tabular-classification' || "
                "!has(self.source.synthetic) && (!has(self.source.builtin) || "
                f"self.source.builtin.name in {list(TABULAR_BUILTINS)})",
                "task tabular-classification reads a CSV (http, s3 or pvc) or the builtin wine or "
                "breast_cancer",
                field_path=".task",
            ),
            cel(
                "self.task == 'text-classification' || !has(self.source.builtin) || "
                f"!(self.source.builtin.name in {list(TEXT_BUILTINS)})",
                "builtin sentiment is text: set task: text-classification",
                field_path=".task",
            ),
            cel(
                "self.task != 'text-classification' || "
                "!has(self.source.synthetic) && (!has(self.source.builtin) || "
                f"self.source.builtin.name in {list(TEXT_BUILTINS)})",
                "task text-classification reads a CSV or JSONL file (http, s3 or pvc) or the "
                "builtin sentiment",
                field_path=".task",
            ),
        )
    }

    source: DatasetSource = Field(
        description="Where the data comes from: exactly one of builtin, synthetic, http, pvc, s3 "
        "or feedback. Immutable: create a new Dataset to use different data.",
        json_schema_extra=rules(immutable("source", "create a new Dataset to use different data")),
    )
    task: Task = Field("image-classification", description=TASK_DESCRIPTION)
    columns: Columns = Field(
        default_factory=Columns,
        description="tabular-classification: which CSV column is the label and which are the "
        "features (the preparation fails naming a column that does not exist or is not numeric).",
    )
    format: DatasetFormat = Field("auto", description=FORMAT_DESCRIPTION)
    splits: Splits = Field(
        default_factory=Splits, description="Train, validation and test fractions."
    )
    preprocessing: Preprocessing = Field(
        default_factory=Preprocessing,
        description="Resizing and normalisation applied at prepare time.",
    )
    storage: Storage = Field(
        default_factory=Storage, description="Where the prepared data is stored."
    )

    @model_validator(mode="after")
    def _synthetic_fits(self) -> DatasetSpec:
        synthetic = self.source.synthetic
        if synthetic is not None:
            c, h, w = synthetic.shape
            if self.preprocessing.resize:
                h = w = self.preprocessing.resize
            if synthetic.num_samples * c * h * w > quantity_value(self.storage.size):
                raise ValueError(SYNTHETIC_FITS)
        return self

    @model_validator(mode="after")
    def _source_fits_task(self) -> DatasetSpec:
        builtin = self.source.builtin
        if builtin is not None and BUILTIN_TASK[builtin.name] != self.task:
            raise ValueError(f"builtin {builtin.name} does not fit task {self.task}")
        if self.task != "image-classification" and self.source.synthetic is not None:
            raise ValueError(f"task {self.task} reads a file (http, s3 or pvc) or a builtin")
        return self


# --- status --------------------------------------------------------------------------------------


class DatasetPhase(StrEnum):
    PENDING = "Pending"
    PREPARING = "Preparing"
    READY = "Ready"
    FAILED = "Failed"


class SplitCounts(StatusModel):
    """Number of samples in each split."""

    train: int | None = Field(None, ge=0, description="Samples in the training split.")
    validation: int | None = Field(None, ge=0, description="Samples in the validation split.")
    test: int | None = Field(None, ge=0, description="Samples in the test split.")
    total: int | None = Field(None, ge=0, description="Samples in all splits together.")


class Sample(StatusModel):
    """One prepared sample, for a person to look at."""

    label: str = Field(description="Its class.")
    image: str | None = Field(
        None, max_length=65536, description="An image sample as a PNG data URI."
    )
    text: str | None = Field(None, max_length=400, description="A text sample (its start).")
    features: dict[str, float] | None = Field(
        None, description="A tabular sample: its first features by name."
    )


class DatasetStatus(StatusModel):
    """What the prepare job produced, and the conditions of the Dataset."""

    observed_generation: int | None = observed_generation_field()
    phase: DatasetPhase | None = phase_field(DatasetPhase)
    conditions: tuple[Condition, ...] = conditions_field(
        "Ready, Reconciling, Stalled, Succeeded, Failed"
    )
    digest: str | None = Field(
        None,
        description="Content digest of the prepared data (`sha256:...`). Training records it, "
        "so a model can be traced to its exact data.",
    )
    counts: SplitCounts | None = Field(None, description="Samples per split.")
    classes: tuple[str, ...] | None = Field(None, description="Class names, in label order.")
    # None, not (): the runtime writes it, and the operator's status must not overwrite it.
    preview: tuple[Sample, ...] | None = Field(
        None, max_length=8, description="A few training samples (one per class first)."
    )
    bytes: int | None = Field(None, ge=0, description="Size of the prepared data in bytes.")
    claim_name: str | None = Field(
        None, description="The PersistentVolumeClaim holding the prepared data."
    )
    location: str | None = Field(
        None,
        description="Where the prepared version is published in the artifact store (an "
        "immutable `s3://<bucket>/<prefix>/<namespace>/datasets/<name>/<digest>/`), when the "
        "operator has one.",
    )
