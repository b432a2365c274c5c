"""Optimizer and learning-rate schedule from the hyperparameters; schedules step per batch."""

from __future__ import annotations

import torch
from torch import nn

from tauon_runtime.contract import Hyperparameters


def build_optimizer(model: nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (1-D tensors): the usual timm/torchvision recipe.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=hp.learning_rate, momentum=hp.momentum, nesterov=hp.momentum > 0
        )
    cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=hp.learning_rate)


WARMUP_START_FACTOR = 0.01  # warm-up starts at 1 % of the learning rate (torchvision's default)


def build_scheduler(
    opt: torch.optim.Optimizer, hp: Hyperparameters, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule, after `warmupEpochs` of linear warm-up when asked for (torchvision's
    recipe: the warm-up's steps, then the schedule over the steps that remain)."""
    warmup = hp.warmup_epochs * steps_per_epoch
    main = _schedule(opt, hp, max(1, hp.epochs * steps_per_epoch - warmup))
    if not warmup:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=WARMUP_START_FACTOR, total_iters=warmup
    )
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warmup])


def _schedule(
    opt: torch.optim.Optimizer, hp: Hyperparameters, total: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if hp.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if hp.schedule == "step":  # divide by 10 at one third and two thirds of training
        return torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[total // 3, 2 * total // 3], gamma=0.1
        )
    if hp.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.learning_rate, total_steps=total)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
