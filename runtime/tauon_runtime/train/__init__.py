"""Training: the loop, checkpoints, distributed setup, metrics."""

from tauon_runtime.train.loop import ModelRejected, status_patch, train

__all__ = ["ModelRejected", "status_patch", "train"]
