"""`tauon-runtime train`: one process or DDP, resumable, evaluated, exported.

Read top to bottom: set up -> resume -> for each epoch (train, checkpoint, validate, maybe stop)
-> test -> accept or reject -> export.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from tauon_runtime.contract import EarlyStopping, TrainConfig
from tauon_runtime.data.dataset import BatchDataset, PreparedDataset, Split
from tauon_runtime.models import build_model, export_model
from tauon_runtime.report import Reporter, StatusReporter
from tauon_runtime.train import distributed
from tauon_runtime.train.checkpoint import Checkpointer, rng_state, set_rng_state
from tauon_runtime.train.metrics import evaluate, improved
from tauon_runtime.train.optim import build_optimizer, build_scheduler
from tauon_runtime.train.sampler import EpochBatchSampler

ENV_KILL_AT_STEP = "TAUON_TEST_KILL_AT_STEP"  # tests: SIGKILL ourselves after this global step
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ModelRejected(RuntimeError):
    """The test metric is below evaluation.minimum; nothing was exported."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


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

    def end_epoch(self, val: dict[str, float], train_loss: float, watch: str, stopping: EarlyStopping | None) -> None:
        """Record the epoch's validation metrics, track the best, decide on early stopping."""
        self.latest = {**val, "trainLoss": round(train_loss, 6)}
        if val and improved(watch, val[watch], self.best_value, stopping.min_delta if stopping else 0.0):
            self.best_value, self.best, self.bad_epochs = val[watch], dict(self.latest), 0
        elif val:
            self.bad_epochs += 1
        self.stopped_early = bool(stopping and val and self.bad_epochs >= stopping.patience)
        self.epoch, self.batch, self.loss_sum, self.loss_count = self.epoch + 1, 0, 0.0, 0


class InputPipeline:
    """uint8 pixels on the host -> normalized floats on the device, in the right memory format."""

    def __init__(self, preprocessing: dict[str, Any], device: torch.device, channels_last: bool) -> None:
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


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run a training job to completion; return the result (also the `finished` event)."""
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


def _train(cfg: TrainConfig, env: distributed.DistEnv, device: torch.device, reporter: Reporter) -> dict[str, Any]:
    hp = cfg.hyperparameters
    if hp.batch_size % env.world_size:
        raise ValueError(f"hyperparameters.batchSize {hp.batch_size} must divide evenly "
                         f"across {env.world_size} processes")
    seed_everything(hp.seed)

    # Data
    data = PreparedDataset(cfg.dataset_dir)
    train_split, val_split, test_split = (data.split(s) for s in ("train", "validation", "test"))
    # batchSize is global: each process takes its share, so steps and results match one process.
    sampler = EpochBatchSampler(len(train_split), hp.batch_size // env.world_size,
                                env.rank, env.world_size, hp.seed)
    workers, pin = cfg.data_loader.num_workers, cfg.data_loader.pin_memory
    loader = torch.utils.data.DataLoader(
        BatchDataset(train_split), sampler=sampler, batch_size=None, num_workers=workers,
        pin_memory=device.type == "cuda" if pin is None else pin, persistent_workers=workers > 0,
    )
    pipeline = InputPipeline(data.preprocessing, device, cfg.channels_last)
    eval_batch = max(256, hp.batch_size)

    # Model, optimizer, schedule
    c, h, _ = data.shape
    num_classes = cfg.model.num_classes or len(data.classes)
    if num_classes != len(data.classes):
        raise ValueError(f"model.numClasses {num_classes} does not match the dataset's {len(data.classes)} classes")
    model = build_model(cfg.model.architecture, num_classes, c, h, cfg.model.options or {}).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if cfg.compile else model  # evaluation runs this, outside DDP
    train_net = net
    if env.distributed:
        train_net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, hp)
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = hp.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, hp, steps_per_epoch)
    amp_dtype = AMP_DTYPES.get(cfg.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16" and device.type == "cuda")

    # Resume
    out = Path(cfg.output_dir)
    checkpoints = Checkpointer(out / "checkpoints", cfg.checkpoint.keep_last)
    state = State()
    if latest := checkpoints.latest():
        saved = checkpoints.load(latest)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        state = State(**saved["state"])
        set_rng_state(saved["rng"])
        reporter.event("resumed", checkpoint=str(latest), epoch=state.epoch, step=state.step)

    def save_checkpoint() -> None:
        state.loss_sum = loss_acc.item()
        if env.is_main:
            path = checkpoints.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "state": asdict(state), "rng": rng_state(),
            }, state.step)
            reporter.event("checkpoint", path=str(path), epoch=state.epoch, step=state.step)

    def progress() -> dict[str, Any]:
        done = state.step - start_step
        eta = (time.monotonic() - started) / done * (total_steps - state.step) if done else None
        return {"epoch": state.epoch, "totalEpochs": hp.epochs, "step": state.step, "totalSteps": total_steps,
                "percent": round(100 * state.step / total_steps, 2), "etaSeconds": eta and round(eta, 1)}

    started, start_step = time.monotonic(), state.step
    reporter.event("start", command="train", architecture=cfg.model.architecture, device=str(device),
                   worldSize=env.world_size, datasetDigest=data.digest, **progress())
    kill_at = int(os.environ.get(ENV_KILL_AT_STEP, "0"))
    stopping = cfg.early_stopping
    watch = stopping.metric if stopping else cfg.evaluation.metric

    # Epochs
    train_net.train()
    while state.epoch < hp.epochs and not state.stopped_early:
        sampler.set_epoch(state.epoch, skip=state.batch)
        # Summed on the device: no host sync per step.
        loss_acc = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
        for x, y in loader:
            inputs, targets = pipeline(x, y)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(train_net(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state.step, state.batch = state.step + 1, state.batch + 1
            loss_acc += loss.detach() * len(targets)
            state.loss_count += len(targets)
            if reporter.status:
                reporter.to_status("progress", progress())
            if cfg.checkpoint.every_steps and state.step % cfg.checkpoint.every_steps == 0:
                save_checkpoint()
            if state.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        count = torch.tensor(float(state.loss_count), dtype=torch.float64, device=device)
        loss_sum, count = distributed.all_reduce_sum(torch.stack([loss_acc, count])).tolist()
        loss_acc.zero_()
        val = evaluate(net, shard_batches(val_split, eval_batch, env), num_classes, pipeline, amp_dtype) \
            if len(val_split) else {}
        state.end_epoch(val, loss_sum / max(count, 1), watch, stopping)
        reporter.event("epoch", **progress(), metrics=state.latest, best=state.best)
        every = cfg.checkpoint.every_epochs
        if (every and state.epoch % every == 0) or state.epoch == hp.epochs or state.stopped_early:
            save_checkpoint()
        if state.stopped_early:
            reporter.event("early_stopped", epoch=state.epoch, metric=watch, best=state.best_value)

    # Test, accept, export
    final_split = "test" if len(test_split) else "validation"  # data prepared without a test split
    test = evaluate(net, shard_batches(test_split if len(test_split) else val_split, eval_batch, env),
                    num_classes, pipeline, amp_dtype)
    reporter.event("evaluation", split=final_split, metrics=test)
    result = {"result": "succeeded", **progress(), "stoppedEarly": state.stopped_early,
              "metrics": test, "best": state.best, "datasetDigest": data.digest}
    minimum = cfg.evaluation.minimum
    if minimum is not None and test[cfg.evaluation.metric] < minimum:
        result["result"] = "rejected"
        reporter.event("finished", **result)
        raise ModelRejected(f"model rejected: test {cfg.evaluation.metric} {test[cfg.evaluation.metric]:.4f} "
                            f"is below evaluation.minimum {minimum}", result)
    if env.is_main:
        card = export_model(model, out / "model", {
            "name": cfg.output.model_name or "model",
            "architecture": cfg.model.architecture,
            "modelOptions": dict(cfg.model.options or {}),
            "numClasses": num_classes,
            "classes": data.classes,
            "inputShape": list(data.shape),
            "preprocessing": {"resize": [h, data.shape[2]],
                              **{k: data.preprocessing[k] for k in ("scale", "mean", "std")}},
            "metrics": test,
            "datasetDigest": data.digest,
            "training": {"epochs": state.epoch, "steps": state.step, "worldSize": env.world_size,
                         "precision": cfg.precision, "hyperparameters": hp.model_dump(by_alias=True)},
        })
        result["model"] = {"location": str(out / "model"), "sha256": card["sha256"], "metrics": test}
        reporter.event("exported", **result["model"])
    distributed.barrier()  # no process exits (and tears down the group) before the export is written
    reporter.event("finished", **result)
    return result


def status_patch(event: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """What the TrainingJob's status learns from a training event (see report.Reporter)."""
    progress_keys = ("epoch", "totalEpochs", "step", "totalSteps", "percent", "etaSeconds")
    progress = {k: fields[k] for k in progress_keys if k in fields}
    if progress.get("etaSeconds") is not None:  # the API's field is whole seconds
        progress["etaSeconds"] = int(round(progress["etaSeconds"]))
    status: dict[str, Any] = {}
    if event in ("start", "progress", "epoch", "finished", "resumed") and progress:
        status["progress"] = progress
    if event == "epoch":
        status["metrics"] = {"latest": fields.get("metrics") or {}, "best": fields.get("best") or {}}
    elif event == "checkpoint":
        status["latestCheckpoint"] = fields["path"]
    elif event == "exported":
        status["model"] = {k: fields[k] for k in ("location", "sha256", "metrics")}
    return {"status": status} if status else None
