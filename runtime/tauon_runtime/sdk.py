"""tauon_runtime.sdk: the platform around a team's own training code.

A TrainingJob with `spec.command` instead of `spec.model` runs that command in its worker pods.
This module gives the command what the built-in loop has: the prepared Dataset, checkpoints
that survive a restart (kept in the artifact store when there is one), progress and metrics in
the TrainingJob's status, the evaluation gate, and an exported model (safetensors + model card)
recorded in `status.model` and servable by a ModelDeployment::

    from tauon_runtime import sdk

    with sdk.run() as run:
        train = run.split("train")                 # x [N, C, H, W] on 0..255, y [N]
        saved = run.resume()                       # the latest checkpoint's dict, or None
        start = saved["epoch"] if saved else 0
        for epoch in range(start, run.hyperparameters.epochs):
            loss = ...                             # your training
            run.report(epoch=epoch + 1, total_epochs=run.hyperparameters.epochs,
                       metrics={"loss": loss})
            run.checkpoint({"epoch": epoch + 1, "model": net.state_dict()}, step=epoch + 1)
        run.export(net, metrics={"meanReturn": score})

Outside a pod, `sdk.run(dataset_dir=..., output_dir=...)` runs the same code on a laptop: no
status is written, checkpoints and the model go to the output directory.

On leaving the `with` block the result goes to the termination log, which is how the operator
learns of the model. A model below `spec.evaluation.minimum` ends the process with exit code 3
(the TrainingJob fails with reason BelowEvaluationGate, without retries). Any other exception
ends it as Python does, with its traceback last in the log: the TrainingJob's condition quotes
those last lines. Only rank 0 reports, checkpoints and exports; the other ranks' calls return
at once, so the same code runs under torchrun.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from tauon_runtime.config import TrainConfig, load_config
from tauon_runtime.contract import Hyperparameters
from tauon_runtime.contract.keys import (
    ENV_CONFIG_JSON,
    ENV_CONFIG_PATH,
    ENV_DATASET_DIR,
    ENV_OUTPUT_DIR,
    ExitCode,
)
from tauon_runtime.data.dataset import PreparedDataset, Split
from tauon_runtime.modelfiles import read_verified
from tauon_runtime.models.export import export_model
from tauon_runtime.report import Reporter, StatusReporter, write_termination_log
from tauon_runtime.store import ArtifactStore, StoreConfig, model_key, owner_from_env
from tauon_runtime.train.distributed import DistEnv
from tauon_runtime.train.loop import ModelRejected, checkpointer, status_patch

__all__ = ["CUSTOM", "Run", "load_weights", "run"]

# The model card's `task` and `architecture` of a model exported through the SDK: a
# ModelDeployment serves it with its own predictor class (spec.predictor).
CUSTOM = "custom"
HISTORY_LIMIT = 200  # status.metrics.history keeps the last 200 epochs


class Run:
    """One process of a training run: what it was given and how it reports. Made by run()."""

    def __init__(self, config: TrainConfig, env: DistEnv, reporter: Reporter) -> None:
        self.config = config
        self.env = env
        self.reporter = reporter
        self.result: dict[str, Any] = {"result": "succeeded"}
        self._data: PreparedDataset | None = None
        self._checkpoints = checkpointer(config)
        self._history: list[dict[str, float]] = []
        self._started = time.monotonic()
        self._first: float | None = None  # the fraction done at the first report (a resume)

    # --- what the run was given -------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reports, checkpoints and exports."""
        return self.env.is_main

    @property
    def hyperparameters(self) -> Hyperparameters:
        """spec.hyperparameters (epochs, batchSize, learningRate, seed, ...)."""
        return self.config.hyperparameters

    @property
    def dataset_dir(self) -> Path:
        return Path(self.config.dataset_dir)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def data(self) -> PreparedDataset:
        """The prepared Dataset: its manifest, classes, task, digest and splits."""
        if self._data is None:
            self._data = PreparedDataset(self.config.dataset_dir)
        return self._data

    def split(self, name: str = "train") -> Split:
        """`train`, `validation` or `test`: tensors x (images [N, C, H, W] on the 0..255
        scale, a text's token ids, a row's standardised features) and y (class ids)."""
        return self.data.split(name)

    # --- progress and metrics ---------------------------------------------------------------

    def report(
        self,
        *,
        epoch: int | None = None,
        total_epochs: int | None = None,
        step: int | None = None,
        total_steps: int | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Progress (and metrics) into status.progress and status.metrics. With an epoch, the
        metrics are that epoch's: status.metrics.latest and one entry of its history. Percent
        and ETA are worked out from what is done of the total; with no total they stay unset."""
        if not self.is_main:
            return
        progress: dict[str, Any] = {
            k: v
            for k, v in (
                ("epoch", epoch),
                ("totalEpochs", total_epochs),
                ("step", step),
                ("totalSteps", total_steps),
            )
            if v is not None
        }
        done = _fraction(epoch, total_epochs) if total_epochs else _fraction(step, total_steps)
        if done is not None:
            progress["percent"] = round(100 * done, 2)
            if self._first is None:
                self._first, self._started = done, time.monotonic()
            elif done > self._first:
                rate = (time.monotonic() - self._started) / (done - self._first)
                progress["etaSeconds"] = round(rate * (1 - done), 1)
        values = {k: float(v) for k, v in (metrics or {}).items()}
        if epoch is None:
            self.reporter.event("progress", **progress, **({"metrics": values} if values else {}))
            return
        self.reporter.event("epoch", **progress, metrics=values)
        self._history = [*self._history, {"epoch": float(epoch), **values}][-HISTORY_LIMIT:]
        self.reporter.to_status("history", {"history": self._history})

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, state: dict[str, Any], step: int) -> str | None:
        """Save `state` (tensors, numbers, strings, lists and dicts of them) as the checkpoint
        of `step`; the last spec.checkpoint.keepLast are kept. Returns where it went."""
        if not self.is_main:
            return None
        self._checkpoints.save({**state, "_history": self._history}, step)
        where = self._checkpoints.location
        self.reporter.event("checkpoint", path=where, step=step)
        return where

    def resume(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The latest checkpoint's state (loaded weights-only), or None on a first start.
        Every rank gets it."""
        latest = self._checkpoints.latest()
        if latest is None:
            return None
        state = self._checkpoints.load(latest, map_location)
        self._history = list(state.pop("_history", []))
        self.reporter.event("resumed", checkpoint=str(latest))
        return state

    # --- the model --------------------------------------------------------------------------

    def export(
        self,
        model: nn.Module,
        *,
        metrics: dict[str, float],
        card: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Gate, write and publish the model: its weights (safetensors, no pickle) and a model
        card with `metrics` and `card`'s fields. Below spec.evaluation.minimum on
        spec.evaluation.metric it is not written (ModelRejected). Returns status.model."""
        values = {k: float(v) for k, v in metrics.items()}
        self.result["metrics"] = values
        evaluation = self.config.evaluation
        if evaluation.minimum and evaluation.metric not in values:
            raise ValueError(
                f"export: spec.evaluation.metric {evaluation.metric!r} is not among the "
                f"metrics given ({', '.join(values) or 'none'}); the gate cannot decide"
            )
        value = values.get(evaluation.metric)
        if value is not None and value < evaluation.minimum:
            self.result["result"] = "rejected"
            raise ModelRejected(
                f"model rejected: {evaluation.metric} {value:.4f} is below "
                f"evaluation.minimum {evaluation.minimum:g}",
                dict(self.result),
            )
        self.reporter.event("evaluation", split="test", metrics=values)
        if not self.is_main:
            return None
        digest = self.data.digest if (self.dataset_dir / "manifest.json").exists() else None
        job = owner_from_env()[1]
        written = export_model(
            model,
            self.output_dir / "model",
            {
                "name": self.config.output.model_name or "model",
                "task": CUSTOM,
                "architecture": CUSTOM,
                **(card or {}),
                "metrics": values,
                **({"datasetDigest": digest} if digest else {}),
                **({"trainingJob": job} if job else {}),
                "training": {"worldSize": self.world_size, "sdk": True},
            },
            onnx=False,  # a user's module has no known input to trace
        )
        model_status: dict[str, Any] = {
            "location": str(self.output_dir / "model"),
            "sha256": written["sha256"],
            "metrics": values,
            "name": written["name"],
            **({"datasetDigest": digest} if digest else {}),
            **({"trainingJob": job} if job else {}),
        }
        if (store := StoreConfig.from_env()) is not None:
            key = model_key(store.prefix, owner_from_env()[0], written["name"], written["sha256"])
            model_status["location"] = ArtifactStore(store).publish(
                self.output_dir / "model", key, written["sha256"], written
            )
        self.result["model"] = model_status
        self.reporter.event("exported", **model_status)
        return model_status


def _fraction(done: int | None, total: int | None) -> float | None:
    if done is None or not total:
        return None
    return min(max(done / total, 0.0), 1.0)


def _config(dataset_dir: str | None, output_dir: str | None) -> TrainConfig:
    """The run config the operator mounted, or one for a run outside a pod."""
    if os.environ.get(ENV_CONFIG_PATH) or os.environ.get(ENV_CONFIG_JSON):
        return load_config(TrainConfig, None)
    return TrainConfig(
        dataset_dir=dataset_dir or os.environ.get(ENV_DATASET_DIR, "data"),
        output_dir=output_dir or os.environ.get(ENV_OUTPUT_DIR, "output"),
    )


@contextmanager
def run(dataset_dir: str | None = None, output_dir: str | None = None) -> Iterator[Run]:
    """The run, for the length of the `with` block; see the module's documentation."""
    env = DistEnv.from_env()
    status = StatusReporter.from_env() if env.is_main else None
    reporter = Reporter(enabled=env.is_main, status=status, status_for=status_patch)
    current = Run(_config(dataset_dir, output_dir), env, reporter)
    reporter.event("start", command="sdk", worldSize=env.world_size, rank=env.rank)
    try:
        yield current
    except ModelRejected as e:
        if env.is_main:
            reporter.event("finished", **e.result, message=str(e))
            write_termination_log({"event": "finished", **e.result, "message": str(e)})
        reporter.close()
        raise SystemExit(ExitCode.REJECTED) from None
    except BaseException:
        reporter.close()  # the traceback is the last of the log: the condition quotes it
        raise
    if env.is_main:
        reporter.event("finished", **current.result)
        write_termination_log({"event": "finished", **current.result})
    reporter.close()


def load_weights(
    model_dir: str | Path, expected_sha256: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(card, state dict) of an exported model, after its sha256 is checked against its card
    (and `expected_sha256`): for a predictor class's `load()`. Weights only, never pickle."""
    card, payload = read_verified(model_dir, expected_sha256)
    return card, load_safetensors(payload)
