"""The TrainingJob's contract: the model, the optimisation recipe, checkpoints, early stopping
and the evaluation gate, and the run config `tauon-runtime train` reads."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from .base import DNS_LABEL, ContractModel, cel, rules
from .data import Task

Architecture = Literal[
    "cnn",
    "lenet",
    "mlp",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "vgg11",
    "lstm",
    "gru",
    "transformer",
]
# The model zoo's names, here so the operator validates without importing torch;
# tauon_runtime.models checks that its registry matches.
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine", "step", "onecycle"]
Precision = Literal["fp32", "bf16", "fp16"]
MonitoredMetric = Literal["accuracy", "loss", "f1"]
# What the built-in loop measures on the test split; a team's own code names its own metrics.
BUILTIN_EVALUATION_METRICS = ("accuracy", "f1")
METRIC_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


# Architectures each task can build; "mlp" serves both (flattened pixels, or the features).
TEXT_ARCHITECTURES = ("lstm", "gru", "transformer")
TASK_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "image-classification": tuple(a for a in ARCHITECTURES if a not in TEXT_ARCHITECTURES),
    "tabular-classification": ("mlp",),
    "text-classification": TEXT_ARCHITECTURES,
}


class ModelSpec(ContractModel):
    """The network to train, from the runtime's model zoo."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "self.task != 'tabular-classification' || self.architecture == 'mlp'",
                "architecture must be mlp for task tabular-classification",
                field_path=".architecture",
            ),
            cel(
                f"(self.task == 'text-classification') == "
                f"(self.architecture in {list(TEXT_ARCHITECTURES)})",
                "architectures lstm, gru and transformer are for task text-classification, "
                "and that task trains only them",
                field_path=".architecture",
            ),
        )
    }

    task: Task = Field(
        "image-classification",
        description="The task the network is trained for; it must be the Dataset's `task`. "
        "`tabular-classification` trains `mlp` only; `text-classification` trains `lstm`, "
        "`gru` or `transformer`.",
    )
    architecture: Architecture = Field(
        description="Network from the model zoo: `cnn` (the small seed CNN), `lenet`, `mlp`, "
        "`resnet18`, `resnet34`, `resnet50`, `mobilenet_v3_small` or `vgg11`; for text, `lstm` "
        "and `gru` (recurrent) or `transformer` (a TransformerEncoder)."
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

    @model_validator(mode="after")
    def _architecture_fits_task(self) -> ModelSpec:
        if self.architecture not in TASK_ARCHITECTURES[self.task]:
            allowed = ", ".join(TASK_ARCHITECTURES[self.task])
            raise ValueError(f"architecture must be one of {allowed} for task {self.task}")
        return self


class Hyperparameters(ContractModel):
    """Optimisation settings."""

    # Cross-field rules: `_warmup` below. Their CEL twins sit on TrainingJobSpec: a rule on this
    # object would make the CRD spell out its whole default instead of `{}`.

    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training split.")
    batch_size: int = Field(
        64,
        ge=1,
        le=65_536,
        description="Global batch size: samples per optimizer step across all processes, split "
        "evenly between them (so it must divide by workers x processesPerWorker x "
        "gradAccumulationSteps).",
    )
    optimizer: Optimizer = Field("adamw", description="Optimizer: `sgd`, `adam` or `adamw`.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Initial learning rate.")
    schedule: Schedule = Field(
        "cosine",
        description="Learning-rate schedule, stepped every optimizer step: `constant`, `cosine` "
        "(to 0 over the run), `step` or `onecycle`.",
    )
    warmup_epochs: int = Field(
        0,
        ge=0,
        le=1_000,
        description="Epochs of linear learning-rate warm-up: the rate climbs from 1% of "
        "learningRate to learningRate, step by step, over these epochs; then `schedule` runs "
        "over the remaining epochs. Steadies the first updates of large batches and fresh "
        "networks. 0: no warm-up. Less than epochs; not with `onecycle`, which warms up by itself.",
    )
    weight_decay: float = Field(
        0.0, ge=0, le=1, description="L2 weight decay (decoupled for adamw)."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum; used by `sgd` only.")
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Label smoothing of the training loss: the cross-entropy target gives "
        "1 - x to the true class and spreads x evenly over all classes, so the model is not "
        "pushed towards over-confident outputs (0.1 is usual). 0: plain cross-entropy. The "
        "reported trainLoss includes it; validation and test losses do not.",
    )
    grad_clip_norm: float | None = Field(
        None,
        gt=0,
        le=10_000,
        description="Clip the gradients before each optimizer step so that their global L2 "
        "norm (over all parameters together) is at most this value; guards against loss "
        "spikes (1.0 is a common choice). With fp16 the loss scaling is undone first, so the "
        "bound applies to the true gradients. Unset: no clipping.",
    )
    grad_accumulation_steps: int = Field(
        1,
        ge=1,
        le=1_024,
        description="Micro-batches per optimizer step: each process splits its share of "
        "batchSize into this many micro-batches and adds up their gradients before one "
        "optimizer step (exchanging them between processes once). Activation memory shrinks "
        "accordingly while the update stays that of the whole batchSize. batchSize must divide "
        "by workers x processesPerWorker x gradAccumulationSteps.",
    )
    seed: int = Field(0, ge=0, description="Seed of weights and shuffling, for reproducible runs.")

    @model_validator(mode="after")
    def _warmup(self) -> Hyperparameters:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                "warmupEpochs must be less than epochs: the schedule needs an epoch "
                "after the warm-up"
            )
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise ValueError(
                "the onecycle schedule warms up by itself: leave warmupEpochs at 0 "
                "or choose another schedule"
            )
        return self


class DataLoaderSpec(ContractModel):
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


class Checkpoint(ContractModel):
    """When to save the training state, so a restarted worker resumes instead of starting over."""

    every_epochs: int = Field(1, ge=1, le=10_000, description="Save a checkpoint every N epochs.")
    every_steps: int | None = Field(
        None, ge=1, description="Also save every N optimizer steps. Unset: only per epoch."
    )
    keep_last: int = Field(3, ge=1, le=100, description="Keep the N most recent checkpoints.")


class EarlyStopping(ContractModel):
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


class Evaluation(ContractModel):
    """The final evaluation on the test split, and the bar a model must clear to be accepted."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "!(self.metric in ['accuracy', 'f1']) || self.minimum <= 1.0",
                "evaluation.minimum of accuracy or f1 is a fraction: at most 1",
                field_path=".minimum",
            ),
        )
    }

    metric: str = Field(
        "accuracy",
        min_length=1,
        max_length=63,
        pattern=METRIC_NAME,
        description="Test metric the model is accepted on: `accuracy` or `f1` (macro) for a "
        "built-in model; for your own code, a metric it reports when it exports "
        "(`meanReturn`, `inceptionScore`, ...). Higher is better.",
    )
    minimum: float = Field(
        0.0,
        ge=0,
        description="The model is published only if the test metric reaches this value; "
        "otherwise the TrainingJob fails with reason BelowEvaluationGate. 0 accepts any model.",
    )

    @model_validator(mode="after")
    def _fraction(self) -> Evaluation:
        if self.metric in BUILTIN_EVALUATION_METRICS and self.minimum > 1:
            raise ValueError("evaluation.minimum of accuracy or f1 is a fraction: at most 1")
        return self


OutputStore = Literal["default", "pvc"]


class Output(ContractModel):
    """Where the trained model goes."""

    model_name: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Name of the exported model. Unset: the TrainingJob's name. The artifact "
        "(safetensors weights plus a JSON model card) is recorded in status.model.",
    )
    store: OutputStore = Field(
        "default",
        description="Where the exported model is published. `default`: the artifact store the "
        "operator is configured with (object storage: an immutable version at "
        "`s3://<bucket>/<prefix>/<namespace>/models/<name>/<sha256>/`), or the output claim "
        "when it has none. `pvc`: the output claim (`pvc://<job>-output/model`), even where a "
        "store is configured.",
    )


Device = Literal["auto", "cpu", "cuda"]
PRECISION_DESCRIPTION = (
    "Numeric precision: `fp32`, `bf16` (autocast; CPU or GPU) or `fp16` (autocast with loss "
    "scaling; GPU only)."
)
CHANNELS_LAST_DESCRIPTION = "Use the channels_last memory format (faster convolutions on GPU)."


class TrainConfig(ContractModel):
    """What `tauon-runtime train` reads: the TrainingJob's spec pieces plus runtime-only paths."""

    model: ModelSpec | None = Field(
        None, description="The network to train. Unset: the TrainingJob runs its own command."
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Epochs, batch size, optimizer and schedule."
    )
    precision: Precision = Field("fp32", description=PRECISION_DESCRIPTION)
    compile: bool = Field(False, description="Compile the model with torch.compile.")
    channels_last: bool = Field(False, description=CHANNELS_LAST_DESCRIPTION)
    checkpoint: Checkpoint = Field(default_factory=Checkpoint, description="Checkpointing.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when validation stalls.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Acceptance rule.")
    output: Output = Field(default_factory=Output, description="The exported model.")
    data_loader: DataLoaderSpec = Field(
        default_factory=DataLoaderSpec, description="Input pipeline."
    )
    dataset_dir: str = Field(description="Runtime only: a prepared dataset layout.")
    output_dir: str = Field(description="Runtime only: checkpoints/ and model/ go here.")
    device: Device = Field("auto", description="Runtime only: auto picks CUDA when present.")

    # The spec fields the operator copies into the run config: the rest of a TrainingJob's spec
    # (workers, resources, suspend ...) concerns the cluster, not the process.
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "hyperparameters",
        "precision",
        "compile",
        "channels_last",
        "checkpoint",
        "early_stopping",
        "evaluation",
        "output",
        "data_loader",
    )
