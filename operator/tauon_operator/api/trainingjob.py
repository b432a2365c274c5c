"""TrainingJob: which data, which model, how to train it, and what it produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from .common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ApiModel,
    Condition,
    Image,
    LocalObjectRef,
    Resources,
    StatusModel,
    cel,
    conditions_field,
    immutable,
    observed_generation_field,
    phase_field,
    rules,
)

Architecture = Literal[
    "cnn", "lenet", "mlp", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "vgg11"
]
Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine", "step", "onecycle"]
Precision = Literal["fp32", "bf16", "fp16"]
MonitoredMetric = Literal["accuracy", "loss", "f1"]
EvaluationMetric = Literal["accuracy", "f1"]


class ModelSpec(ApiModel):
    """The network to train, from the runtime's model zoo."""

    architecture: Architecture = Field(
        description="Network from the model zoo: `cnn` (the small seed CNN), `lenet`, `mlp`, "
        "`resnet18`, `resnet34`, `resnet50`, `mobilenet_v3_small` or `vgg11`."
    )
    num_classes: int | None = Field(
        None,
        ge=2,
        le=100_000,
        description="Number of output classes. Unset: the number of classes of the Dataset.",
    )
    options: dict[str, Any] | None = Field(
        None,
        description="Architecture-specific options passed to the model builder as they are "
        "(e.g. `{pretrained: false, dropout: 0.1}`).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Hyperparameters(ApiModel):
    """Optimisation settings."""

    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training split.")
    batch_size: int = Field(
        64,
        ge=1,
        le=65_536,
        description="Global batch size: samples per optimizer step across all processes, split "
        "evenly between them (so it must divide by workers x processesPerWorker).",
    )
    optimizer: Optimizer = Field("adamw", description="Optimizer: `sgd`, `adam` or `adamw`.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Initial learning rate.")
    schedule: Schedule = Field(
        "cosine",
        description="Learning-rate schedule, stepped every optimizer step: `constant`, `cosine` "
        "(to 0 over the run), `step` or `onecycle`.",
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay (decoupled for adamw).")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum; used by `sgd` only.")
    seed: int = Field(0, ge=0, description="Seed of weights and shuffling, for reproducible runs.")


class DataLoaderSpec(ApiModel):
    """How each process feeds batches to the model."""

    num_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Loader worker processes per training process; 0 loads batches in the "
        "training process (best for data that fits in memory).",
    )
    pin_memory: bool | None = Field(
        None, description="Pin host memory for faster copies to the GPU. Unset: on with GPUs."
    )


class WorkerResources(Resources):
    """Compute for one training worker pod: GPUs, CPU and memory."""


class Checkpoint(ApiModel):
    """When to save the training state, so a restarted worker resumes instead of starting over."""

    every_epochs: int = Field(1, ge=1, le=10_000, description="Save a checkpoint every N epochs.")
    every_steps: int | None = Field(
        None, ge=1, description="Also save every N optimizer steps. Unset: only per epoch."
    )
    keep_last: int = Field(3, ge=1, le=100, description="Keep the N most recent checkpoints.")


class EarlyStopping(ApiModel):
    """Stop when the validation metric stops improving."""

    metric: MonitoredMetric = Field(
        "loss",
        description="Validation metric to watch: `loss` (lower is better) or `accuracy` "
        "(higher is better).",
    )
    patience: int = Field(
        3, ge=1, le=10_000, description="Epochs without improvement before training stops."
    )
    min_delta: float = Field(
        0.0, ge=0, description="Smallest change of the metric that counts as an improvement."
    )


class Evaluation(ApiModel):
    """The final evaluation on the test split, and the bar a model must clear to be accepted."""

    metric: EvaluationMetric = Field(
        "accuracy", description="Test metric the model is accepted on: `accuracy` or `f1` (macro)."
    )
    minimum: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The model is published only if the test metric reaches this value; "
        "otherwise the TrainingJob fails with reason BelowMinimum. 0 accepts any model.",
    )


class Output(ApiModel):
    """Where the trained model goes."""

    model_name: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Name of the exported model. Unset: the TrainingJob's name. The artifact "
        "(safetensors weights plus a JSON model card) is recorded in status.model.",
    )


class TrainingJobSpec(ApiModel):
    """The desired training run."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "self.resources.gpus <= 0 || self.processesPerWorker <= self.resources.gpus",
                "processesPerWorker cannot exceed resources.gpus: each process drives one GPU",
                field_path=".processesPerWorker",
            ),
            cel(
                "self.hyperparameters.batchSize % (self.workers * self.processesPerWorker) == 0",
                "hyperparameters.batchSize is the global batch: it must divide evenly across "
                "workers x processesPerWorker",
                field_path=".hyperparameters.batchSize",
            ),
            cel(
                "self.precision != 'fp16' || self.resources.gpus > 0",
                "fp16 needs GPUs: use bf16 or fp32 on CPU",
                field_path=".precision",
            ),
        )
    }

    dataset_ref: LocalObjectRef = Field(
        description="The Dataset to train on, in the same namespace. Immutable: a run's data "
        "cannot change (an API-server rule cannot see whether the run is active, so it is "
        "frozen from creation; create a new TrainingJob instead).",
        json_schema_extra=rules(immutable("datasetRef", "create a new TrainingJob to train on other data")),
    )
    model: ModelSpec = Field(
        description="The network to train. Immutable from creation, like datasetRef.",
        json_schema_extra=rules(immutable("model", "create a new TrainingJob to train a different model")),
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Epochs, batch size, optimizer and schedule."
    )
    precision: Precision = Field(
        "fp32",
        description="Numeric precision: `fp32`, `bf16` (autocast; CPU or GPU) or `fp16` "
        "(autocast with loss scaling; GPU only).",
    )
    compile: bool = Field(False, description="Compile the model with torch.compile.")
    channels_last: bool = Field(
        False, description="Use the channels_last memory format (faster convolutions on GPU)."
    )
    data_loader: DataLoaderSpec = Field(
        default_factory=DataLoaderSpec, description="Data loading settings."
    )
    workers: int = Field(
        1,
        ge=1,
        le=128,
        description="Number of worker pods (replicas). More than one trains with "
        "DistributedDataParallel across pods.",
    )
    processes_per_worker: int = Field(
        1,
        ge=1,
        le=16,
        description="Training processes per worker pod (torchrun nproc_per_node); with GPUs, "
        "at most one per GPU.",
    )
    resources: WorkerResources = Field(
        default_factory=WorkerResources, description="GPUs, CPU and memory of each worker pod."
    )
    checkpoint: Checkpoint = Field(
        default_factory=Checkpoint, description="Checkpoint frequency and retention."
    )
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop early when validation stops improving. Unset: train all epochs."
    )
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Final test evaluation and acceptance bar."
    )
    output: Output = Field(default_factory=Output, description="The exported model.")
    suspend: bool = Field(
        False, description="Suspend the run: worker pods are removed; resuming starts from the "
        "latest checkpoint."
    )
    backoff_limit: int = Field(
        3, ge=0, le=100, description="Retries of failed worker pods before the run fails."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the run once it has been active this long. Unset: no limit."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Delete the finished run's pods this long after it ends (the TrainingJob and "
        "its model stay). Unset: keep them.",
    )
    priority_class_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PriorityClass of the worker pods. Unset: the cluster's default priority.",
    )
    image: Image | None = None

    @model_validator(mode="after")
    def _cross_field(self) -> TrainingJobSpec:
        if self.resources.gpus and self.processes_per_worker > self.resources.gpus:
            raise ValueError("processesPerWorker cannot exceed resources.gpus")
        if self.hyperparameters.batch_size % (self.workers * self.processes_per_worker):
            raise ValueError(
                "hyperparameters.batchSize must divide evenly across workers x processesPerWorker"
            )
        if self.precision == "fp16" and not self.resources.gpus:
            raise ValueError("fp16 needs GPUs: use bf16 or fp32 on CPU")
        return self


# --- status --------------------------------------------------------------------------------------


class Progress(StatusModel):
    """How far training has come."""

    epoch: int | None = Field(None, ge=0, description="Epochs completed.")
    total_epochs: int | None = Field(None, ge=0, description="Epochs planned.")
    step: int | None = Field(None, ge=0, description="Optimizer steps completed.")
    total_steps: int | None = Field(None, ge=0, description="Optimizer steps planned.")
    percent: float | None = Field(None, ge=0, le=100, description="Percent complete, 0-100.")
    eta_seconds: int | None = Field(None, ge=0, description="Estimated seconds until training ends.")


class Metrics(StatusModel):
    """Metric values keyed by name (`accuracy`, `loss`, `train_loss`, ...)."""

    latest: dict[str, float] = Field(
        default_factory=dict,
        description="Metrics of the latest evaluation: validation during training, test once the "
        "final evaluation ran.",
    )
    best: dict[str, float] = Field(
        default_factory=dict, description="Best validation value of each metric so far."
    )


class ModelArtifact(StatusModel):
    """The exported model."""

    name: str | None = Field(None, description="Model name (spec.output.modelName or the job's name).")
    location: str | None = Field(
        None, description="Where the artifact lives, e.g. `pvc://<claim>/models/<name>/<sha256>`."
    )
    sha256: str | None = Field(None, description="SHA-256 of the safetensors weights.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Test metrics of the exported model."
    )
    dataset_digest: str | None = Field(None, description="Digest of the Dataset it was trained on.")


class TrainingJobStatus(StatusModel):
    """Progress, metrics and the produced model, and the conditions of the TrainingJob."""

    observed_generation: int | None = observed_generation_field()
    phase: str | None = phase_field("Pending, Running, Suspended, Succeeded or Failed")
    conditions: tuple[Condition, ...] = conditions_field("Ready, Reconciling, Stalled, Succeeded, Failed")
    start_time: datetime | None = Field(None, description="When the first worker started.")
    completion_time: datetime | None = Field(None, description="When the run succeeded.")
    active: int | None = Field(None, ge=0, description="Worker pods running.")
    succeeded: int | None = Field(None, ge=0, description="Worker pods that completed.")
    failed: int | None = Field(None, ge=0, description="Worker pods that failed.")
    restarts: int | None = Field(None, ge=0, description="Times the run was restarted from a checkpoint.")
    progress: Progress | None = Field(None, description="Epochs and steps completed, and an estimate of the rest.")
    metrics: Metrics | None = Field(None, description="Latest and best metric values.")
    latest_checkpoint: str | None = Field(None, description="Path of the latest checkpoint.")
    model: ModelArtifact | None = Field(None, description="The exported model, once training succeeded.")
