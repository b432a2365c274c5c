"""Tasks: what differs between kinds of model, behind one small interface.

A task owns how raw data is read, what a prepared version holds besides the split tensors, and
which model-card fields serving needs to decode a request the way training saw its inputs. The
loop, checkpoints, DDP, the evaluation gate and export are shared and never ask which task runs.

Every task's prepared `x` is model-shaped `[N, C, H, W]` and normalised by the shared
`(x / scale - mean) / std` per channel, so the input pipeline, the ONNX check and the serving
backends stay one code path: tabular rows are `[N, F, 1, 1]` (features as channels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tauon_runtime.contract import PrepareConfig
from tauon_runtime.data.sources import RawData


class Task(Protocol):
    name: str

    def load_raw(self, cfg: PrepareConfig, work: Path) -> RawData:
        """The source as raw samples, before splitting."""
        ...

    def prepare(
        self, cfg: PrepareConfig, raw: RawData, index: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
        """Split `raw` by `index` -> (x per split, preprocessing, extra manifest fields).

        Statistics come from the train split only."""
        ...

    def card_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """What the model card records for serving: at least `preprocessing`."""
        ...


def resolve_source_path(cfg: PrepareConfig) -> Path:
    """The pvc source's path, inside the mounted claim when running in a pod."""
    assert cfg.source.pvc is not None
    path = Path(cfg.source.pvc.path)
    if cfg.source_dir:  # in a pod the claim is mounted at source_dir; path is inside the claim
        path = Path(cfg.source_dir) / cfg.source.pvc.path.lstrip("/")
    return path


def get(name: str) -> Task:
    from .image import ImageClassification
    from .tabular import TabularClassification

    tasks: dict[str, Task] = {
        "image-classification": ImageClassification(),
        "tabular-classification": TabularClassification(),
    }
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name]
