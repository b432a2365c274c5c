"""One optimizer step: forward and backward over N micro-batches, unscale, clip, step, schedule.

Only tensor work happens here: no I/O, no host synchronisation, nothing that waits on another
service. The order is the one the PyTorch AMP recipe prescribes for gradient accumulation and
clipping: gradients add up over the micro-batches (with DDP, exchanged only after the last),
then GradScaler's loss scaling is undone before the norm is clipped, then the optimizer steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class OptimizerStep:
    """Trains `net` on one batch per call: `accumulation` micro-batches, one optimizer step."""

    net: nn.Module  # what runs forward and backward: the DDP wrapper when distributed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    accumulation: int = 1
    clip_norm: float | None = None
    label_smoothing: float = 0.0
    amp_dtype: torch.dtype | None = None

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """One optimizer step on the batch; adds the batch's summed loss to `loss_sum` (on the
        device: no host sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        chunks = min(self.accumulation, len(targets))
        micro = zip(inputs.tensor_split(chunks), targets.tensor_split(chunks), strict=True)
        for i, (x, y) in enumerate(micro):
            with self._sync(last=i == chunks - 1):
                loss = self.loss(x, y)
                # The mean over the whole batch is the micro-batch means weighted by their sizes.
                share = loss * (len(y) / len(targets)) if chunks > 1 else loss
                self.scaler.scale(share).backward()
            loss_sum += loss.detach() * len(y)
        if self.clip_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.clip_norm)
        self.scaler.step(self.optimizer)  # skipped (and the scale lowered) on inf/NaN gradients
        self.scaler.update()
        self.scheduler.step()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            return F.cross_entropy(self.net(x), y, label_smoothing=self.label_smoothing)

    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP all-reduces gradients in backward: only the last micro-batch needs to."""
        if last or not isinstance(self.net, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.net.no_sync()
