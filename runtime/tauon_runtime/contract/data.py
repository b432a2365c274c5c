"""The Dataset's contract: where data comes from and how it is split and prepared, and the run
config `tauon-runtime prepare` reads (the spec pieces plus where to read and write)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import DNS_SUBDOMAIN, ContractModel, Sha256, cel, rules

BuiltinName = Literal["digits", "wine", "breast_cancer"]
Task = Literal["image-classification", "tabular-classification"]
TASK_DESCRIPTION = (
    "What the data is for: `image-classification` (images and a class) or "
    "`tabular-classification` (named numeric feature columns and a class). It decides the "
    "prepared layout, the model's input and the serving codec; a TrainingJob's `model.task` "
    "must name the same task."
)
# Which builtin belongs to which task (the API server checks it; see DatasetSpec's rules).
TABULAR_BUILTINS = ("wine", "breast_cancer")
Dimension = Annotated[int, Field(ge=1, le=4096)]
SPLIT_TOLERANCE = 1e-6

# --- sources -------------------------------------------------------------------------------------


class BuiltinSource(ContractModel):
    """A real data set that ships inside the runtime image, so it works offline."""

    name: BuiltinName = Field(
        description="Which bundled data set: `digits` is scikit-learn's 1,797 handwritten "
        "digits (8x8 grey images, 10 classes); `wine` (178 wines, 13 chemical features, 3 "
        "cultivars) and `breast_cancer` (569 tumours, 30 features, 2 classes) are "
        "tabular-classification data sets."
    )


class SyntheticSource(ContractModel):
    """Generated images with learnable class structure: for smoke tests and benchmarks."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                # A shape of the wrong length is minItems' error, not this one's.
                "self.shape.size() != 3 || self.shape[0] == 1 || self.shape[0] == 3",
                "shape is [channels, height, width] with 1 or 3 channels",
                field_path=".shape",
            ),
            cel(
                "self.numSamples >= self.numClasses",
                "numSamples must be at least numClasses: every class needs a sample",
                field_path=".numSamples",
            ),
        )
    }

    num_samples: int = Field(
        1000, ge=10, le=10_000_000, description="Number of samples to generate."
    )
    num_classes: int = Field(10, ge=2, le=100_000, description="Number of classes.")
    shape: tuple[Dimension, ...] = Field(
        (1, 28, 28),
        min_length=3,
        max_length=3,
        description="Shape of one sample as [channels, height, width].",
    )
    seed: int = Field(0, ge=0, description="Random seed: the same seed gives the same data.")

    @model_validator(mode="after")
    def _buildable(self) -> SyntheticSource:
        if self.shape[0] not in (1, 3):
            raise ValueError("shape is [channels, height, width] with 1 or 3 channels")
        if self.num_samples < self.num_classes:
            raise ValueError("numSamples must be at least numClasses: every class needs a sample")
        return self


class HttpSource(ContractModel):
    """An archive or array file fetched over HTTP(S) and verified before use."""

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="HTTP(S) URL of an archive (.tar.gz, .tgz, .tar or .zip) holding an "
        "image folder tree or a CSV file.",
    )
    sha256: Sha256 = Field(
        description="Required SHA-256 of the file (64 lowercase hex characters): the download "
        "is rejected when it does not match, so the data cannot change under you."
    )


class PvcSource(ContractModel):
    """Data already present on a PersistentVolumeClaim in the same namespace."""

    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the PersistentVolumeClaim (mounted read-only).",
    )
    path: str = Field(
        "/",
        max_length=1024,
        pattern=r"^/[^\x00]*$",
        description="Path inside the claim (from its root) of the image folder, CSV file or "
        "archive to read.",
    )


class S3Source(ContractModel):
    """An archive or CSV file in S3-compatible object storage, verified before use. The
    credentials are the artifact store's (its Secret in the Dataset's namespace)."""

    bucket: str = Field(
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="Bucket name.",
    )
    key: str = Field(min_length=1, max_length=1024, pattern=r"^[^/]\S*$", description="Object key.")
    endpoint: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="Endpoint URL, for non-AWS storage. Unset: the artifact store's endpoint.",
    )
    region: str | None = Field(
        None, min_length=1, max_length=64, description="Region. Unset: the artifact store's."
    )
    sha256: Sha256 = Field(
        description="Required SHA-256 of the object: it is rejected when it does not match."
    )


class DatasetSource(ContractModel):
    """Where the data comes from: set exactly one of builtin, synthetic, http, pvc or s3."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "(has(self.builtin) ? 1 : 0) + (has(self.synthetic) ? 1 : 0) + "
                "(has(self.http) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.s3) ? 1 : 0) == 1",
                "exactly one of builtin, synthetic, http, pvc or s3 must be set",
            ),
        )
    }

    builtin: BuiltinSource | None = Field(None, description="A data set bundled with the runtime.")
    synthetic: SyntheticSource | None = Field(None, description="Generated data.")
    http: HttpSource | None = Field(
        None, description="A file downloaded over HTTP(S), pinned by sha256."
    )
    pvc: PvcSource | None = Field(None, description="A path on an existing PersistentVolumeClaim.")
    s3: S3Source | None = Field(
        None, description="An object in S3-compatible storage, pinned by sha256."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetSource:
        chosen = [n for n in ("builtin", "synthetic", "http", "pvc", "s3") if getattr(self, n)]
        if len(chosen) != 1:
            raise ValueError("exactly one of builtin, synthetic, http, pvc or s3 must be set")
        return self

    @property
    def kind(self) -> str:
        """The name of the source that is set: builtin, synthetic, http, pvc or s3."""
        return next(n for n in ("builtin", "synthetic", "http", "pvc", "s3") if getattr(self, n))


# --- preparation -------------------------------------------------------------------------------


class Splits(ContractModel):
    """How samples are divided between training, validation and test."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                f"self.train + self.validation + self.test >= {1 - SPLIT_TOLERANCE} && "
                f"self.train + self.validation + self.test <= {1 + SPLIT_TOLERANCE}",
                "train + validation + test must sum to 1 (for example 0.8, 0.1, 0.1)",
            )
        )
    }

    train: float = Field(0.8, gt=0, le=1, description="Fraction of samples used for training.")
    validation: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction held out for per-epoch validation and early stopping.",
    )
    test: float = Field(
        0.1, ge=0, lt=1, description="Fraction held out for the final evaluation of the model."
    )
    seed: int = Field(
        0, ge=0, description="Seed of the (stratified) shuffle: the same seed gives the same split."
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> Splits:
        if abs(self.train + self.validation + self.test - 1) > SPLIT_TOLERANCE:
            raise ValueError("train + validation + test must sum to 1")
        return self


class Preprocessing(ContractModel):
    """Transformations applied once, when the data set is prepared."""

    resize: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Resize every image to this square side, in pixels. Unset keeps the source "
        "size (then all images must have the same size).",
    )
    normalize: bool = Field(
        True,
        description="Normalise inputs with the per-channel mean and standard deviation measured "
        "on the training split (recorded in the model card, so serving does the same).",
    )


class Columns(ContractModel):
    """Which CSV columns a tabular-classification data set reads."""

    label: str = Field(
        "label",
        min_length=1,
        max_length=256,
        description="Name of the column holding the class of each row.",
    )
    features: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Names of the numeric feature columns, in the model's input order. Unset: "
        "every column except the label.",
    )


DatasetFormat = Literal["auto", "imagefolder", "csv"]

FORMAT_DESCRIPTION = (
    "Layout of http and pvc data: `imagefolder` (one directory per class), `csv` (a `label` "
    "column, then pixel columns), or `auto` to detect it. Ignored for builtin and synthetic "
    "sources."
)


class PrepareConfig(ContractModel):
    """What `tauon-runtime prepare` reads: the Dataset's spec pieces plus runtime-only paths."""

    source: DatasetSource = Field(description="Where the data comes from (exactly one kind).")
    task: Task = Field("image-classification", description=TASK_DESCRIPTION)
    columns: Columns = Field(
        default_factory=Columns, description="tabular-classification: the label and features."
    )
    format: DatasetFormat = Field("auto", description=FORMAT_DESCRIPTION)
    splits: Splits = Field(
        default_factory=Splits, description="Train, validation and test fractions."
    )
    preprocessing: Preprocessing = Field(
        default_factory=Preprocessing,
        description="Resizing and normalisation applied at prepare time.",
    )
    output_dir: str = Field(description="Runtime only: directory for the prepared layout.")
    source_dir: str | None = Field(
        None,
        description="Runtime only: where the pvc source's claim is mounted in the pod; "
        "`source.pvc.path` is resolved below it.",
    )
