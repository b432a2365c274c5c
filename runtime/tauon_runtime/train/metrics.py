"""Classification metrics, computed from a confusion matrix summed across processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tauon_runtime.train.distributed import all_reduce_sum

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "loss": False}


def summarize(confusion: torch.Tensor, loss_sum: float) -> dict[str, float]:
    total = confusion.sum().item()
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = confusion.sum(1) > 0  # macro F1 over the classes that occur
    return {
        "loss": round(loss_sum / max(total, 1), 6),
        "accuracy": round(tp.sum().item() / max(total, 1), 6),
        "f1": round(f1[present].mean().item() if present.any() else 0.0, 6),
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches, num_classes: int, prepare, amp_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Loss, accuracy and macro F1 over `batches` (this process's shard), exact across processes."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for x, y in batches:
        inputs, targets = prepare(x, y)
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(inputs).float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").double().cpu()
        pairs = targets.cpu() * num_classes + logits.argmax(1).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes * num_classes).view(
            num_classes, num_classes
        )
    model.train(was_training)
    device_of = next(model.parameters()).device
    confusion = all_reduce_sum(confusion.to(device_of)).cpu()
    loss_sum = all_reduce_sum(loss_sum.to(device_of)).cpu()
    return summarize(confusion, loss_sum.item())


def improved(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if HIGHER_IS_BETTER[metric] else value < best - min_delta
