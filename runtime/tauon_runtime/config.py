"""Run-config models: the contract between the operator and the runtime.

The operator builds these from a custom resource's spec (field names mirror the CRDs) and hands
them to the pod as a file (`--config PATH` or env `TAUON_RUN_CONFIG`) or as inline JSON (env
`TAUON_RUN_CONFIG_JSON`). This module must stay importable without torch: the operator image has
none, and a test guards it.

Unknown fields are ignored so that the operator may pass a CRD spec as it is (fields such as
`storage`, `workers` or `resources` concern the operator, not the runtime).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

# The model zoo's names, here so the operator can validate without importing torch;
# tauon_runtime.models checks that its registry matches.
ARCHITECTURES: tuple[str, ...] = (
    "cnn",
    "lenet",
    "mlp",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "vgg11",
)

ENV_CONFIG_PATH = "TAUON_RUN_CONFIG"
ENV_CONFIG_JSON = "TAUON_RUN_CONFIG_JSON"

Device = Literal["auto", "cpu", "cuda"]
Metric = Literal["accuracy", "loss", "f1"]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
        extra="ignore",
    )


def _exactly_one(model: BaseModel, names: tuple[str, ...], where: str) -> None:
    chosen = [n for n in names if getattr(model, n) is not None]
    if len(chosen) != 1:
        got = ", ".join(to_camel(n) for n in chosen) or "none"
        raise ValueError(f"{where} needs exactly one of {', '.join(names)}; got {got}")


# --------------------------------------------------------------------------------------------
# Dataset / prepare


class BuiltinSource(_Model):
    name: Literal["digits"] = Field(
        "digits", description="A real data set shipped in a package: `digits` is scikit-learn's "
        "8x8 handwritten digits (1797 images, 10 classes), available offline."
    )


class SyntheticSource(_Model):
    num_samples: int = Field(1000, ge=10, le=10_000_000, description="How many samples to generate.")
    num_classes: int = Field(10, ge=2, le=10_000, description="How many classes.")
    shape: tuple[int, int, int] = Field(
        (1, 8, 8), description="Image shape [channels, height, width]."
    )
    seed: int = Field(0, ge=0, description="Seed: the same seed gives the same data.")

    @model_validator(mode="after")
    def _shape_positive(self) -> SyntheticSource:
        if any(d < 1 for d in self.shape) or self.shape[0] not in (1, 3):
            raise ValueError("shape must be [C, H, W] with C in {1, 3} and H, W >= 1")
        return self


class HttpSource(_Model):
    url: str = Field(
        ..., pattern=r"^https?://", description="HTTP(S) URL of a .tar.gz/.tgz/.tar/.zip archive "
        "holding an ImageFolder tree or a CSV file."
    )
    sha256: str = Field(
        ..., pattern=r"^[0-9a-f]{64}$", description="Expected sha256 of the archive (lowercase hex)."
    )


class PvcSource(_Model):
    claim_name: str = Field(..., min_length=1, description="PersistentVolumeClaim holding the data.")
    path: str = Field(
        "", description="Path inside the claim: an ImageFolder directory, a CSV file or an archive."
    )


class DatasetSource(_Model):
    builtin: BuiltinSource | None = Field(None, description="A data set bundled with the runtime.")
    synthetic: SyntheticSource | None = Field(None, description="Seeded, learnable synthetic data.")
    http: HttpSource | None = Field(None, description="An archive downloaded and verified by sha256.")
    pvc: PvcSource | None = Field(None, description="Data already on a volume.")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSource:
        _exactly_one(self, ("builtin", "synthetic", "http", "pvc"), "source")
        return self

    @property
    def kind(self) -> str:
        return next(n for n in ("builtin", "synthetic", "http", "pvc") if getattr(self, n) is not None)


class Splits(_Model):
    train: float = Field(0.8, gt=0, le=1, description="Fraction of samples for training.")
    validation: float = Field(0.1, ge=0, lt=1, description="Fraction for per-epoch validation.")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction for the final test metrics.")
    seed: int = Field(0, ge=0, description="Seed of the (stratified) split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> Splits:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"splits train + validation + test must sum to 1, got {total:g}")
        return self


class Preprocessing(_Model):
    resize: int | None = Field(
        None, ge=1, le=4096, description="Resize images to this square side (pixels) when preparing."
    )
    normalize: bool = Field(
        True, description="Normalize inputs with per-channel mean/std measured on the train split."
    )


class PrepareConfig(_Model):
    """What `tauon-runtime prepare` needs: a Dataset spec plus where to write."""

    source: DatasetSource = Field(..., description="Where the data comes from (exactly one kind).")
    format: Literal["auto", "imagefolder", "csv"] = Field(
        "auto", description="Layout of http/pvc data: ImageFolder (one directory per class) or "
        "CSV (a `label` column, then pixel columns); `auto` detects it."
    )
    splits: Splits = Field(default_factory=Splits, description="Train/validation/test fractions.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description="Resize, normalize.")
    output_dir: str = Field(..., description="Runtime only: directory for the prepared layout.")
    source_dir: str | None = Field(
        None, description="Runtime only: where the pvc source's claim is mounted in the pod; "
        "`source.pvc.path` is resolved below it."
    )


# --------------------------------------------------------------------------------------------
# TrainingJob / train


class ModelSpec(_Model):
    architecture: str = Field("cnn", description=f"One of: {', '.join(ARCHITECTURES)}.")
    num_classes: int | None = Field(
        None, ge=2, description="Output classes; by default the prepared dataset's class count."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Architecture options, e.g. {hidden: 128, dropout: 0.1}."
    )

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"{value!r} is not one of {', '.join(ARCHITECTURES)}")
        return value


class Hyperparameters(_Model):
    epochs: int = Field(10, ge=1, le=100_000, description="Passes over the training split.")
    batch_size: int = Field(
        64, ge=1, le=1_000_000, description="Global batch size, split evenly across all processes."
    )
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="Optimizer.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    schedule: Literal["constant", "cosine", "step", "onecycle"] = Field(
        "cosine", description="Learning-rate schedule, stepped every optimizer step."
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (sgd only).")
    seed: int = Field(0, ge=0, description="Seed for initialization and data order.")


class CheckpointSpec(_Model):
    every_epochs: int | None = Field(1, ge=1, description="Checkpoint every N epochs.")
    every_steps: int | None = Field(None, ge=1, description="Also checkpoint every N optimizer steps.")
    keep_last: int = Field(3, ge=1, le=1000, description="How many checkpoints to keep.")


class EarlyStopping(_Model):
    metric: Metric = Field("loss", description="Validation metric to watch.")
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")


class Evaluation(_Model):
    metric: Literal["accuracy", "f1"] = Field("accuracy", description="Test metric to accept on.")
    minimum: float | None = Field(
        None, ge=0, le=1, description="Reject the model (no export, exit code 3) below this."
    )


class OutputSpec(_Model):
    model_name: str | None = Field(None, description="Name recorded in the model card.")


class DataLoaderSpec(_Model):
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes per process.")
    pin_memory: bool | None = Field(None, description="Pin host memory; by default on for CUDA.")


class TrainConfig(_Model):
    """What `tauon-runtime train` needs: a TrainingJob spec plus runtime-only paths."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture and size.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Optimization.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision; fp16 uses a gradient scaler on CUDA."
    )
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    channels_last: bool = Field(False, description="Use the channels_last memory format.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpointing.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when validation stalls.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Acceptance rule.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Exported model.")
    data_loader: DataLoaderSpec = Field(default_factory=DataLoaderSpec, description="Input pipeline.")
    dataset_dir: str = Field(..., description="Runtime only: a prepared dataset layout.")
    output_dir: str = Field(..., description="Runtime only: checkpoints/ and model/ go here.")
    device: Device = Field("auto", description="Runtime only: auto picks CUDA when present.")


# --------------------------------------------------------------------------------------------
# ModelDeployment / serve


class Batching(_Model):
    max_batch_size: int = Field(32, ge=1, le=4096, description="Largest batch formed.")
    max_latency_ms: float = Field(5, ge=0, le=10_000, description="Longest wait to fill a batch.")


class Feedback(_Model):
    enabled: bool = Field(False, description="Accept /v1/feedback.")
    path: str | None = Field(None, description="JSONL file the feedback is appended to.")
    retention_days: int | None = Field(None, ge=1, description="Drop feedback older than this.")


class ServeConfig(_Model):
    """What `tauon-runtime serve` needs."""

    model_name: str = Field(..., min_length=1, description="Name in the v2 protocol's URLs.")
    model_dir: str = Field(..., description="Directory with model.safetensors and model.json.")
    expected_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Refuse to load weights with another sha256."
    )
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    host: str = Field("0.0.0.0", description="Address to listen on.")
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1, description="Larger bodies get 413.")
    request_timeout_seconds: float = Field(30, gt=0, description="Per-request timeout.")
    drain_seconds: float = Field(
        3, ge=0, le=300, description="After SIGTERM, keep answering (while reporting not ready) "
        "this long, so Services stop routing here before the listener closes: a rollout drops "
        "no request.")
    feedback: Feedback = Field(default_factory=Feedback, description="User feedback store.")
    device: Device = Field("auto", description="auto picks CUDA when present.")
    top_k: int = Field(5, ge=1, le=1000, description="Labels returned by /v1/predict.")


# --------------------------------------------------------------------------------------------
# Loading

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """The run config is missing or invalid; the message names the field."""


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def load_config(kind_model: type[ConfigT], path: str | os.PathLike[str] | None = None) -> ConfigT:
    """Read a run config: `path`, else env TAUON_RUN_CONFIG (a file), else TAUON_RUN_CONFIG_JSON.

    Files may be JSON or YAML. Raises ConfigError naming each invalid field.
    """
    if path is None:
        path = os.environ.get(ENV_CONFIG_PATH) or None
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {origin}: {e.strerror}") from None
    elif os.environ.get(ENV_CONFIG_JSON):
        origin, text = f"${ENV_CONFIG_JSON}", os.environ[ENV_CONFIG_JSON]
    else:
        raise ConfigError(f"no run config: pass --config PATH or set {ENV_CONFIG_PATH} or {ENV_CONFIG_JSON}")
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config {origin} is not valid JSON/YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {origin} must be a mapping, got {type(data).__name__}")
    try:
        return kind_model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid {kind_model.__name__} in {origin}:\n{_describe(e)}") from None
