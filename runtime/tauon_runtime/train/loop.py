"""`tauon-runtime train`: one process or DDP, resumable, evaluated, exported.

Read top to bottom, as torchvision's classification reference reads: `train` -> `set_up` ->
`resume` -> for each epoch `train_one_epoch` then `evaluate_and_stop` -> `accept_or_reject` ->
`export`. The optimizer step itself (micro-batches, clipping, AMP) is `step.OptimizerStep`.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from tauon_runtime import tasks
from tauon_runtime.contract import EarlyStopping, Hyperparameters, ModelSpec, TrainConfig
from tauon_runtime.contract.keys import ENV_RUN_UID
from tauon_runtime.data.dataset import BatchDataset, PreparedDataset, Split
from tauon_runtime.models import build_model, export_model
from tauon_runtime.report import Reporter, StatusReporter
from tauon_runtime.store import (
    ArtifactStore,
    StoreConfig,
    checkpoints_key,
    model_key,
    owner_from_env,
)
from tauon_runtime.train import distributed
from tauon_runtime.train.checkpoint import (
    Checkpointer,
    StoredCheckpoints,
    rng_state,
    set_rng_state,
)
from tauon_runtime.train.metrics import evaluate, improved
from tauon_runtime.train.optim import build_optimizer, build_scheduler
from tauon_runtime.train.sampler import EpochBatchSampler
from tauon_runtime.train.step import OptimizerStep

ENV_KILL_AT_STEP = "TAUON_TEST_KILL_AT_STEP"  # tests: SIGKILL ourselves after this global step
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ModelRejected(RuntimeError):
    """The test metric is below evaluation.minimum; nothing was exported."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


HISTORY = 200  # epochs of metrics kept in status.metrics.history


@dataclass
class State:
    """Everything besides model/optimizer tensors that a checkpoint must restore."""

    epoch: int = 0  # the epoch in progress (or next to start)
    batch: int = 0  # batches of `epoch` already trained on
    step: int = 0  # optimizer steps since the very start
    loss_sum: float = 0.0  # running training loss of `epoch`, for its mean
    loss_count: int = 0
    best_value: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    latest: dict[str, float] = field(default_factory=dict)  # last validation metrics
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch, the last 200

    def end_epoch(
        self, val: dict[str, float], train_loss: float, watch: str, stopping: EarlyStopping | None
    ) -> None:
        """Record the epoch's validation metrics, track the best, decide on early stopping."""
        self.latest = {**val, "trainLoss": round(train_loss, 6)}
        if val and improved(
            watch, val[watch], self.best_value, stopping.min_delta if stopping else 0.0
        ):
            self.best_value, self.best, self.bad_epochs = val[watch], dict(self.latest), 0
        elif val:
            self.bad_epochs += 1
        self.stopped_early = bool(stopping and val and self.bad_epochs >= stopping.patience)
        self.epoch, self.batch, self.loss_sum, self.loss_count = self.epoch + 1, 0, 0.0, 0
        self.history = [*self.history, {"epoch": self.epoch, **self.latest}][-HISTORY:]


class InputPipeline:
    """uint8 pixels on the host -> normalized floats on the device, in the right memory format."""

    def __init__(
        self, preprocessing: dict[str, Any], device: torch.device, channels_last: bool
    ) -> None:
        shape = (1, -1, 1, 1)
        std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(shape)
        mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(shape)
        # (x / scale - mean) / std as one multiply-subtract
        self.mul = (1.0 / (preprocessing.get("scale", 255.0) * std)).to(device)
        self.sub = (mean / std).to(device)
        self.device, self.channels_last = device, channels_last

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).float().mul_(self.mul).sub_(self.sub)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)


def shard_batches(split: Split, batch_size: int, env: distributed.DistEnv):
    """This process's share of an evaluation split, unpadded so metrics are exact."""
    idx = torch.arange(env.rank, len(split), env.world_size)
    for chunk in idx.split(batch_size):
        yield split.x[chunk], split.y[chunk]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class NoBuiltinModel(ValueError):
    """`tauon-runtime train` trains the zoo's models; a run config without one is own code's."""


def builtin_model(cfg: TrainConfig) -> ModelSpec:
    if cfg.model is None:
        raise NoBuiltinModel(
            "the run config has no model: `tauon-runtime train` trains a built-in network; a "
            "TrainingJob without spec.model runs its spec.command instead"
        )
    return cfg.model


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run a training job to completion; return the result (also the `finished` event)."""
    builtin_model(cfg)  # before any process group or device is set up
    env = distributed.DistEnv.from_env()
    device = distributed.resolve_device(cfg.device, env)
    distributed.setup(env, device)
    if reporter is None:  # only rank 0 speaks, on stdout and to the TrainingJob's status
        status = StatusReporter.from_env() if env.is_main else None
        reporter = Reporter(enabled=env.is_main, status=status, status_for=status_patch)
    try:
        return _train(cfg, env, device, reporter)
    finally:
        reporter.close()
        distributed.teardown()


def _train(
    cfg: TrainConfig, env: distributed.DistEnv, device: torch.device, reporter: Reporter
) -> dict[str, Any]:
    run = set_up(cfg, env, device)
    resume(run, reporter)
    run.started, run.start_step = time.monotonic(), run.state.step
    reporter.event(
        "start",
        command="train",
        architecture=builtin_model(cfg).architecture,
        device=str(device),
        worldSize=env.world_size,
        datasetDigest=run.data.digest,
        **run.progress(),
    )
    run.train_net.train()
    while run.state.epoch < run.hp.epochs and not run.state.stopped_early:
        train_loss = train_one_epoch(run, reporter)
        evaluate_and_stop(run, train_loss, reporter)
    result = accept_or_reject(run, reporter)
    if env.is_main:
        export(run, result, reporter)
    distributed.barrier()  # no process exits (and tears down the group) before the export is written
    reporter.event("finished", **result)
    return result


# --- set-up --------------------------------------------------------------------------------------


@dataclass
class Run:
    """What the epochs need, built once by `set_up`."""

    cfg: TrainConfig
    env: distributed.DistEnv
    device: torch.device
    data: PreparedDataset
    val_split: Split
    test_split: Split
    sampler: EpochBatchSampler
    loader: torch.utils.data.DataLoader | DeviceBatches
    pipeline: InputPipeline
    num_classes: int
    model: torch.nn.Module  # the module itself: its state is what checkpoints and export save
    net: torch.nn.Module  # model, compiled when asked for; evaluation runs this, outside DDP
    train_net: torch.nn.Module  # net, wrapped in DDP when distributed
    step: OptimizerStep
    checkpoints: Checkpointer
    state: State = field(default_factory=State)
    loss_acc: torch.Tensor | None = None  # this epoch's summed training loss, on the device
    started: float = 0.0
    start_step: int = 0

    @property
    def hp(self) -> Hyperparameters:
        return self.cfg.hyperparameters

    @property
    def total_steps(self) -> int:
        return self.hp.epochs * self.sampler.batches_per_epoch

    @property
    def eval_batch(self) -> int:
        return max(256, self.hp.batch_size)

    @property
    def watch(self) -> str:
        """The validation metric that decides "best" and early stopping."""
        stopping = self.cfg.early_stopping
        return stopping.metric if stopping else self.cfg.evaluation.metric

    def metrics_on(self, split: Split) -> dict[str, float]:
        """Loss, accuracy and F1 of the model on `split`, exact across processes."""
        batches = shard_batches(split, self.eval_batch, self.env)
        return evaluate(self.net, batches, self.num_classes, self.pipeline, self.step.amp_dtype)

    def progress(self) -> dict[str, Any]:
        state, total = self.state, self.total_steps
        done = state.step - self.start_step
        eta = (time.monotonic() - self.started) / done * (total - state.step) if done else None
        return {
            "epoch": state.epoch,
            "totalEpochs": self.hp.epochs,
            "step": state.step,
            "totalSteps": total,
            "percent": round(100 * state.step / total, 2),
            "etaSeconds": eta and round(eta, 1),
        }


def set_up(cfg: TrainConfig, env: distributed.DistEnv, device: torch.device) -> Run:
    """Data, model, optimizer, schedule: everything the epochs need, from the config."""
    hp = cfg.hyperparameters
    if hp.batch_size % (env.world_size * hp.grad_accumulation_steps):
        raise ValueError(
            f"hyperparameters.batchSize {hp.batch_size} must divide evenly across "
            f"{env.world_size} processes x {hp.grad_accumulation_steps} accumulation steps"
        )
    seed_everything(hp.seed)
    data = PreparedDataset(cfg.dataset_dir)
    if data.task != builtin_model(cfg).task:
        raise ValueError(
            f"model.task {builtin_model(cfg).task} does not match the Dataset's task {data.task}"
        )
    sampler, loader = _train_loader(cfg, env, device, data.split("train"))
    num_classes = builtin_model(cfg).num_classes or len(data.classes)
    if num_classes != len(data.classes):
        raise ValueError(
            f"model.numClasses {num_classes} does not match the dataset's {len(data.classes)} classes"
        )
    c, h, _ = data.shape
    options = model_options(cfg, data)
    model = build_model(builtin_model(cfg).architecture, num_classes, c, h, options)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = cast(torch.nn.Module, torch.compile(model)) if cfg.compile else model
    train_net = net
    if env.distributed:
        ids = [device.index] if device.type == "cuda" else None
        train_net = DistributedDataParallel(net, device_ids=ids)
    optimizer = build_optimizer(model, hp)
    step = OptimizerStep(
        train_net,
        optimizer,
        build_scheduler(optimizer, hp, sampler.batches_per_epoch),
        torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16" and device.type == "cuda"),
        accumulation=hp.grad_accumulation_steps,
        clip_norm=hp.grad_clip_norm,
        label_smoothing=hp.label_smoothing,
        amp_dtype=AMP_DTYPES.get(cfg.precision),
    )
    return Run(
        cfg=cfg,
        env=env,
        device=device,
        data=data,
        val_split=data.split("validation"),
        test_split=data.split("test"),
        sampler=sampler,
        loader=loader,
        pipeline=InputPipeline(data.preprocessing, device, cfg.channels_last),
        num_classes=num_classes,
        model=model,
        net=net,
        train_net=train_net,
        step=step,
        checkpoints=checkpointer(cfg),
    )


def model_options(cfg: TrainConfig, data: PreparedDataset) -> dict[str, Any]:
    """The spec's model options over what the data decides (a text model's vocabulary)."""
    return {
        **tasks.get(data.task).model_options(data.manifest),
        **(builtin_model(cfg).options or {}),
    }


def checkpointer(cfg: TrainConfig) -> Checkpointer:
    """Checkpoints in the output directory, and in the artifact store when there is one (the
    output directory is then the pod's own, gone with it)."""
    local = Path(cfg.output_dir) / "checkpoints"
    store, uid = StoreConfig.from_env(), os.environ.get(ENV_RUN_UID, "")
    if store is None or not uid:  # not run by the operator for a TrainingJob: local only
        return Checkpointer(local, cfg.checkpoint.keep_last)
    namespace, name = owner_from_env()
    key = checkpoints_key(store.prefix, namespace, name, uid)
    return Checkpointer(
        local, cfg.checkpoint.keep_last, StoredCheckpoints(ArtifactStore(store), key)
    )


# The share of free GPU memory the training split may take when it is kept there.
DEVICE_DATA_SHARE = 0.25


class DeviceBatches:
    """The whole training split in the device's memory, each batch indexed there: no DataLoader
    machinery per step and no host-to-device copy (the batch is a fresh tensor, so the input
    pipeline may normalise it in place)."""

    def __init__(self, split: Split, sampler: EpochBatchSampler, device: torch.device) -> None:
        self.x, self.y = split.x.to(device), split.y.to(device)
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for indices in self.sampler:
            idx = torch.as_tensor(indices, device=self.x.device)
            yield self.x[idx], self.y[idx]


def fits_on_device(split: Split, device: torch.device) -> bool:
    """On the CPU the split is in memory already; on a GPU it must take at most a quarter of
    the free memory."""
    if device.type != "cuda":
        return True
    size = split.x.element_size() * split.x.nelement() + split.y.element_size() * len(split.y)
    free, _ = torch.cuda.mem_get_info(device)
    return size <= DEVICE_DATA_SHARE * free


def _train_loader(
    cfg: TrainConfig, env: distributed.DistEnv, device: torch.device, split: Split
) -> tuple[EpochBatchSampler, torch.utils.data.DataLoader | DeviceBatches]:
    """batchSize is global: each process takes its share, so steps and results match one process.
    Data that fits in the device's memory is kept there (unless loader workers are asked for);
    other data goes through a DataLoader, pinned and copied asynchronously to a GPU."""
    hp = cfg.hyperparameters
    sampler = EpochBatchSampler(
        len(split), hp.batch_size // env.world_size, env.rank, env.world_size, hp.seed
    )
    workers, pin = cfg.data_loader.num_workers, cfg.data_loader.pin_memory
    if workers == 0 and fits_on_device(split, device):
        return sampler, DeviceBatches(split, sampler, device)
    loader = torch.utils.data.DataLoader(
        BatchDataset(split),
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda" if pin is None else pin,
        persistent_workers=workers > 0,
    )
    return sampler, loader


def resume(run: Run, reporter: Reporter) -> None:
    """Continue from the latest checkpoint, if there is one: weights, optimizer, RNG, position."""
    if latest := run.checkpoints.latest():
        saved = run.checkpoints.load(latest)
        run.model.load_state_dict(saved["model"])
        run.step.optimizer.load_state_dict(saved["optimizer"])
        run.step.scheduler.load_state_dict(saved["scheduler"])
        run.step.scaler.load_state_dict(saved["scaler"])
        run.state = State(**saved["state"])
        set_rng_state(saved["rng"])
        reporter.event(
            "resumed", checkpoint=str(latest), epoch=run.state.epoch, step=run.state.step
        )


def save_checkpoint(run: Run, reporter: Reporter) -> None:
    state = run.state
    state.loss_sum = run.loss_acc.item() if run.loss_acc is not None else state.loss_sum
    if run.env.is_main:
        step = run.step
        path = run.checkpoints.save(
            {
                "model": run.model.state_dict(),
                "optimizer": step.optimizer.state_dict(),
                "scheduler": step.scheduler.state_dict(),
                "scaler": step.scaler.state_dict(),
                "state": asdict(state),
                "rng": rng_state(),
            },
            state.step,
        )
        where = run.checkpoints.location or str(path)
        reporter.event("checkpoint", path=where, epoch=state.epoch, step=state.step)


# --- one epoch -----------------------------------------------------------------------------------


def train_one_epoch(run: Run, reporter: Reporter) -> float:
    """Train on the rest of the current epoch; return its mean training loss over all processes."""
    state, every_steps = run.state, run.cfg.checkpoint.every_steps
    kill_at = int(os.environ.get(ENV_KILL_AT_STEP, "0"))
    run.sampler.set_epoch(state.epoch, skip=state.batch)
    # Summed on the device: no host sync per step.
    run.loss_acc = torch.tensor(state.loss_sum, dtype=torch.float64, device=run.device)
    for x, y in run.loader:
        inputs, targets = run.pipeline(x, y)
        run.step(inputs, targets, run.loss_acc)
        state.step, state.batch = state.step + 1, state.batch + 1
        state.loss_count += len(targets)
        if reporter.status:  # queued for the status thread: returns at once
            reporter.to_status("progress", run.progress())
        if every_steps and state.step % every_steps == 0:
            save_checkpoint(run, reporter)
        if state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    count = torch.tensor(float(state.loss_count), dtype=torch.float64, device=run.device)
    loss_sum, count = distributed.all_reduce_sum(torch.stack([run.loss_acc, count])).tolist()
    run.loss_acc.zero_()
    return loss_sum / max(count, 1)


def evaluate_and_stop(run: Run, train_loss: float, reporter: Reporter) -> None:
    """Validate the epoch, track the best, checkpoint, and decide whether to stop early."""
    state, cfg = run.state, run.cfg
    val = run.metrics_on(run.val_split) if len(run.val_split) else {}
    state.end_epoch(val, train_loss, run.watch, cfg.early_stopping)
    reporter.event("epoch", **run.progress(), metrics=state.latest, best=state.best)
    reporter.to_status("history", {"history": state.history})  # status only, not each log line
    every = cfg.checkpoint.every_epochs
    if (every and state.epoch % every == 0) or state.epoch == run.hp.epochs or state.stopped_early:
        save_checkpoint(run, reporter)
    if state.stopped_early:
        reporter.event("early_stopped", epoch=state.epoch, metric=run.watch, best=state.best_value)


# --- test, accept, export ------------------------------------------------------------------------


def accept_or_reject(run: Run, reporter: Reporter) -> dict[str, Any]:
    """Evaluate on the test split; the result, or ModelRejected below evaluation.minimum."""
    has_test = len(run.test_split) > 0  # data prepared without a test split: validation stands in
    test = run.metrics_on(run.test_split if has_test else run.val_split)
    reporter.event("evaluation", split="test" if has_test else "validation", metrics=test)
    result = {
        "result": "succeeded",
        **run.progress(),
        "stoppedEarly": run.state.stopped_early,
        "metrics": test,
        "best": run.state.best,
        "datasetDigest": run.data.digest,
    }
    metric, minimum = run.cfg.evaluation.metric, run.cfg.evaluation.minimum
    if minimum is not None and test[metric] < minimum:
        result["result"] = "rejected"
        reporter.event("finished", **result)
        raise ModelRejected(
            f"model rejected: test {metric} {test[metric]:.4f} "
            f"is below evaluation.minimum {minimum}",
            result,
        )
    return result


def export(run: Run, result: dict[str, Any], reporter: Reporter) -> None:
    """Write the model and its card (rank 0); record it in `result`."""
    cfg, data, state, out = run.cfg, run.data, run.state, Path(run.cfg.output_dir)
    test = result["metrics"]
    has_test = len(run.test_split) > 0  # the ONNX export is checked on what accuracy was
    card = export_model(
        run.model,
        out / "model",
        {
            "name": cfg.output.model_name or "model",
            "architecture": builtin_model(cfg).architecture,
            "modelOptions": model_options(cfg, data),
            "numClasses": run.num_classes,
            "classes": data.classes,
            "task": data.task,
            "inputShape": list(data.shape),
            **tasks.get(data.task).card_fields(data.manifest),
            "metrics": test,
            "datasetDigest": data.digest,
            **({"trainingJob": job} if (job := owner_from_env()[1]) else {}),
            "training": {
                "epochs": state.epoch,
                "steps": state.step,
                "worldSize": run.env.world_size,
                "precision": cfg.precision,
                "hyperparameters": run.hp.model_dump(by_alias=True),
            },
        },
        check_inputs=(run.test_split if has_test else run.val_split).x,
        check_split="test" if has_test else "validation",
    )
    result["model"] = {
        "location": str(out / "model"),
        "sha256": card["sha256"],
        "metrics": test,
        "name": card["name"],
        "datasetDigest": data.digest,
        **({"trainingJob": card["trainingJob"]} if "trainingJob" in card else {}),
    }
    if (store := StoreConfig.from_env()) is not None:
        # A version in the artifact store: every file uploaded and verified, the manifest last.
        key = model_key(store.prefix, owner_from_env()[0], card["name"], card["sha256"])
        result["model"]["location"] = ArtifactStore(store).publish(
            out / "model", key, card["sha256"], card
        )
    reporter.event("exported", **result["model"], onnx=card.get("onnx"))


def status_patch(event: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """What the TrainingJob's status learns from a training event (see report.Reporter)."""
    progress_keys = ("epoch", "totalEpochs", "step", "totalSteps", "percent", "etaSeconds")
    progress = {k: fields[k] for k in progress_keys if k in fields}
    if progress.get("etaSeconds") is not None:  # the API's field is whole seconds
        progress["etaSeconds"] = round(progress["etaSeconds"])
    status: dict[str, Any] = {}
    if event in ("start", "progress", "epoch", "finished", "resumed") and progress:
        status["progress"] = progress
    if event == "epoch":
        status["metrics"] = {
            "latest": fields.get("metrics") or {},
            "best": fields.get("best") or {},
        }
    elif event == "history":
        status["metrics"] = {"history": fields["history"]}
    elif event == "checkpoint":
        status["latestCheckpoint"] = fields["path"]
    elif event == "exported":
        keys = ("location", "sha256", "metrics", "name", "datasetDigest", "trainingJob")
        status["model"] = {k: fields[k] for k in keys if k in fields}
    return {"status": status} if status else None
