"""TrainingJob: which data, which model, how to train it, and what it produced."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from tauon_runtime.contract.train import (
    BUILTIN_EVALUATION_METRICS,
    CHANNELS_LAST_DESCRIPTION,
    PRECISION_DESCRIPTION,
    Checkpoint,
    DataLoaderSpec,
    EarlyStopping,
    Evaluation,
    Hyperparameters,
    ModelSpec,
    Output,
    Precision,
)

from .code import COMMAND_ITEMS, Argument, CodeSource
from .common import (
    DNS_SUBDOMAIN,
    INT32_MAX,
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
from .core import NodeLabels, affinity_field, node_selector_field, tolerations_field

MAX_WORKERS = 128
DATASET_REQUIRED_MESSAGE = (
    "datasetRef is required with model: a built-in network trains on a Dataset"
)
ONE_OF_MESSAGE = "set exactly one of model (a built-in network) or command (your own training code)"
MAX_BACKOFF_LIMIT = 100  # also the highest attempt number: worker Jobs are `<name>-a<attempt>`


class WorkerResources(Resources):
    """Compute for one training worker pod: GPUs, CPU and memory."""


class TrainingJobSpec(ApiModel):
    """The desired training run."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                "self.resources.gpus <= 0 || self.processesPerWorker <= self.resources.gpus",
                "processesPerWorker cannot exceed resources.gpus: each process drives one GPU",
                field_path=".processesPerWorker",
            ),
            # Each rule leaves a value out of its own bounds to that bound's error: no modulus by
            # zero, no second complaint about the same mistake.
            cel(
                "self.workers < 1 || self.processesPerWorker < 1 || "
                "self.hyperparameters.gradAccumulationSteps < 1 || "
                "self.hyperparameters.batchSize % (self.workers * self.processesPerWorker"
                " * self.hyperparameters.gradAccumulationSteps) == 0",
                "hyperparameters.batchSize is the global batch: it must divide evenly across "
                "workers x processesPerWorker x hyperparameters.gradAccumulationSteps",
                field_path=".hyperparameters.batchSize",
            ),
            cel(
                "self.hyperparameters.epochs < 1 || "
                "self.hyperparameters.warmupEpochs < self.hyperparameters.epochs",
                "hyperparameters.warmupEpochs must be less than epochs: the schedule needs an "
                "epoch after the warm-up",
                field_path=".hyperparameters.warmupEpochs",
            ),
            cel(
                "self.hyperparameters.schedule != 'onecycle' || self.hyperparameters.warmupEpochs == 0",
                "the onecycle schedule warms up by itself: leave hyperparameters.warmupEpochs at 0 "
                "or choose another schedule",
                field_path=".hyperparameters.warmupEpochs",
            ),
            cel(
                "self.precision != 'fp16' || self.resources.gpus > 0",
                "fp16 needs GPUs: use bf16 or fp32 on CPU",
                field_path=".precision",
            ),
            cel("has(self.model) != has(self.command)", ONE_OF_MESSAGE, field_path=".model"),
            cel(
                "!has(self.model) || has(self.datasetRef)",
                DATASET_REQUIRED_MESSAGE,
                field_path=".datasetRef",
            ),
            cel(
                "has(self.datasetRef) == has(oldSelf.datasetRef)",
                "datasetRef is immutable: create a new TrainingJob to train on other data",
                field_path=".datasetRef",
                reason="FieldValueForbidden",
            ),
            cel(
                "has(self.command) || (!has(self.args) && !has(self.code))",
                "args and code go with command: they are for your own code",
                field_path=".command",
            ),
            cel(
                "!has(self.model) || self.evaluation.metric in ['accuracy', 'f1']",
                "a built-in model is evaluated on accuracy or f1; other metrics are your own "
                "code's",
                field_path=".evaluation.metric",
            ),
            cel(
                "has(self.model) || !has(self.earlyStopping)",
                "earlyStopping is the built-in loop's: your own code decides when it stops",
                field_path=".earlyStopping",
            ),
            cel(
                "has(self.model) == has(oldSelf.model)",
                "a TrainingJob cannot switch between a built-in model and its own command: "
                "create a new TrainingJob",
                field_path=".model",
                reason="FieldValueForbidden",
            ),
        )
    }

    dataset_ref: LocalObjectRef | None = Field(
        None,
        description="The Dataset to train on, in the same namespace; required with model (your "
        "own code may need none: a reinforcement learner's data is its environment). Immutable: "
        "a run's data "
        "cannot change (an API-server rule cannot see whether the run is active, so it is "
        "frozen from creation; create a new TrainingJob instead).",
        json_schema_extra=rules(
            immutable("datasetRef", "create a new TrainingJob to train on other data")
        ),
    )
    model: ModelSpec | None = Field(
        None,
        description="The built-in network to train (exactly one of model or command). "
        "Immutable from creation, like datasetRef.",
        json_schema_extra=rules(
            immutable("model", "create a new TrainingJob to train a different model")
        ),
    )
    command: tuple[Argument, ...] | None = Field(
        None,
        min_length=1,
        max_length=COMMAND_ITEMS,
        description="Your own training program instead of a built-in model (exactly one of "
        "model or command), e.g. `[python, train.py]`. It runs in the worker pods under the "
        "same contract: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR; "
        "several processes go through torchrun), the prepared Dataset at TAUON_DATASET_DIR, "
        "checkpoints at TAUON_CHECKPOINT_DIR (kept across restarts), the output at "
        "TAUON_OUTPUT_DIR, and tauon_runtime.sdk to report progress and metrics and export the "
        "model (docs/own-code.md). Immutable, like model.",
        json_schema_extra=rules(
            immutable("command", "create a new TrainingJob to run different code")
        ),
    )
    args: tuple[Argument, ...] | None = Field(
        None, max_length=COMMAND_ITEMS, description="Arguments to command."
    )
    code: CodeSource | None = Field(
        None,
        description="Where command's code comes from, with no image to build: a ConfigMap or a "
        "claim mounted read-only at /code (the working directory, on PYTHONPATH). Unset: the "
        "image has it.",
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Epochs, batch size, optimizer and schedule."
    )
    precision: Precision = Field("fp32", description=PRECISION_DESCRIPTION)
    compile: bool = Field(False, description="Compile the model with torch.compile.")
    channels_last: bool = Field(False, description=CHANNELS_LAST_DESCRIPTION)
    data_loader: DataLoaderSpec = Field(
        default_factory=DataLoaderSpec, description="Data loading settings."
    )
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
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
        False,
        description="Suspend the run: worker pods are removed; resuming starts from the "
        "latest checkpoint.",
    )
    backoff_limit: int = Field(
        3,
        ge=0,
        le=MAX_BACKOFF_LIMIT,
        description="Retries of failed worker pods before the run fails.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the run once it has been active this long. Unset: no limit."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        le=INT32_MAX,  # the Job's field is an int32
        description="Delete the finished run's pods this long after it ends (the TrainingJob and "
        "its model stay). Unset: keep them.",
    )
    priority_class_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PriorityClass of the worker pods. Unset: the cluster's default priority. "
        "Kueue, when it queues the run, admits and preempts by this priority too.",
    )
    tolerations: tuple[dict[str, Any], ...] | None = tolerations_field("worker pods")
    node_selector: NodeLabels | None = node_selector_field("worker pods")
    affinity: dict[str, Any] | None = affinity_field("worker pods")
    image: Image | None = Field(
        None,
        description="Container image of the workers. Unset: the runtime image the operator was "
        "installed with (it has PyTorch and tauon_runtime.sdk; your command can bring its own).",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> TrainingJobSpec:
        if (self.model is None) == (self.command is None):
            raise ValueError(ONE_OF_MESSAGE)
        if self.model is not None and self.dataset_ref is None:
            raise ValueError(DATASET_REQUIRED_MESSAGE)
        if self.command is None and (self.args is not None or self.code is not None):
            raise ValueError("args and code go with command: they are for your own code")
        if self.model is not None and self.evaluation.metric not in BUILTIN_EVALUATION_METRICS:
            raise ValueError("evaluation.metric: a built-in model is evaluated on accuracy or f1")
        if self.model is None and self.early_stopping is not None:
            raise ValueError("earlyStopping is the built-in loop's: your own code decides")
        if self.resources.gpus and self.processes_per_worker > self.resources.gpus:
            raise ValueError("processesPerWorker cannot exceed resources.gpus")
        hp = self.hyperparameters
        if hp.batch_size % (self.workers * self.processes_per_worker * hp.grad_accumulation_steps):
            raise ValueError(
                "hyperparameters.batchSize must divide evenly across workers x processesPerWorker "
                "x hyperparameters.gradAccumulationSteps"
            )
        if self.precision == "fp16" and not self.resources.gpus:
            raise ValueError("precision fp16 needs GPUs: use bf16 or fp32 on CPU")
        return self


# --- status --------------------------------------------------------------------------------------


class TrainingJobPhase(StrEnum):
    PENDING = "Pending"  # waiting for the Dataset, or for the workers to start
    QUEUED = "Queued"  # waiting for Kueue to admit it (again, after a preemption)
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    RESTARTING = "Restarting"  # a worker failed: the group restarts from the latest checkpoint
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TrainingJobReason(StrEnum):
    """Condition reasons the operator writes on a TrainingJob."""

    DATASET_NOT_FOUND = "DatasetNotFound"
    DATASET_FAILED = "DatasetFailed"
    WAITING_FOR_DATASET = "WaitingForDataset"
    CREATING = "Creating"
    STARTING_WORKERS = "StartingWorkers"
    TRAINING = "Training"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    PREEMPTED = "Preempted"
    WORKER_FAILED = "WorkerFailed"
    SUCCEEDED = "Succeeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BELOW_EVALUATION_GATE = "BelowEvaluationGate"
    INVALID_CONFIG = "InvalidConfig"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    INVALID_SPEC = "InvalidSpec"
    SPEC_CHANGE_NOT_APPLIED = "SpecChangeNotApplied"


class Progress(StatusModel):
    """How far training has come."""

    epoch: int | None = Field(None, ge=0, description="Epochs completed.")
    total_epochs: int | None = Field(None, ge=0, description="Epochs planned.")
    step: int | None = Field(None, ge=0, description="Optimizer steps completed.")
    total_steps: int | None = Field(None, ge=0, description="Optimizer steps planned.")
    percent: float | None = Field(None, ge=0, le=100, description="Percent complete, 0-100.")
    eta_seconds: int | None = Field(
        None, ge=0, description="Estimated seconds until training ends."
    )


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
    history: tuple[dict[str, float], ...] = Field(
        (),
        max_length=200,
        description="Per-epoch metrics, oldest first (the last 200 epochs): `epoch`, "
        "`trainLoss` and the validation metrics of that epoch.",
    )


class ModelArtifact(StatusModel):
    """The exported model."""

    name: str | None = Field(
        None, description="Model name (spec.output.modelName or the job's name)."
    )
    location: str | None = Field(
        None,
        description="Where the artifact lives: an immutable version in the artifact store "
        "(`s3://<bucket>/<prefix>/<namespace>/models/<name>/<sha256>/`, servable from any "
        "namespace by model.uri), or `pvc://<job>-output/model` without one.",
    )
    sha256: str | None = Field(None, description="SHA-256 of the safetensors weights.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Test metrics of the exported model."
    )
    dataset_digest: str | None = Field(None, description="Digest of the Dataset it was trained on.")
    training_job: str | None = Field(None, description="The TrainingJob that made it.")


class TrainingJobStatus(StatusModel):
    """Progress, metrics and the produced model, and the conditions of the TrainingJob."""

    observed_generation: int | None = observed_generation_field()
    phase: TrainingJobPhase | None = phase_field(TrainingJobPhase)
    conditions: tuple[Condition, ...] = conditions_field(
        "Ready, Reconciling, Stalled, Succeeded, Failed, SpecApplied, and Admitted when the run "
        "is in a Kueue queue (Queued, Admitted or Preempted, with Kueue's reason)"
    )
    start_time: datetime | None = Field(None, description="When the first worker started.")
    completion_time: datetime | None = Field(None, description="When the run succeeded.")
    active: int | None = Field(None, ge=0, description="Worker pods running.")
    succeeded: int | None = Field(None, ge=0, description="Worker pods that completed.")
    failed: int | None = Field(None, ge=0, description="Worker pods that failed.")
    restarts: int | None = Field(
        None, ge=0, description="Times the run was restarted from a checkpoint."
    )
    progress: Progress | None = Field(
        None, description="Epochs and steps completed, and an estimate of the rest."
    )
    metrics: Metrics | None = Field(None, description="Latest and best metric values.")
    latest_checkpoint: str | None = Field(None, description="Path of the latest checkpoint.")
    model: ModelArtifact | None = Field(
        None, description="The exported model, once training succeeded."
    )
