"""Tasks: what differs between kinds of model, behind one small interface.

A task owns how raw data is read, what a prepared version holds besides the split tensors, and
which model-card fields serving needs to decode a request the way training saw its inputs. The
loop, checkpoints, DDP, the evaluation gate and export are shared and never ask which task runs.

Every task's prepared `x` is model-shaped `[N, C, H, W]` and normalised by the shared
`(x / scale - mean) / std` per channel, so the input pipeline, the ONNX check and the serving
backends stay one code path: tabular rows are `[N, F, 1, 1]` (features as channels), texts
`[N, L, 1, 1]` token ids (with the identity as normalisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tauon_runtime.contract import PrepareConfig
from tauon_runtime.data import sources
from tauon_runtime.data.sources import DataError, RawData


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

    def model_options(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Model options the data decides (a text model's vocabulary size), under the user's."""
        ...


def resolve_source_path(cfg: PrepareConfig) -> Path:
    """The pvc source's path, inside the mounted claim when running in a pod."""
    assert cfg.source.pvc is not None
    path = Path(cfg.source.pvc.path)
    if cfg.source_dir:  # in a pod the claim is mounted at source_dir; path is inside the claim
        path = Path(cfg.source_dir) / cfg.source.pvc.path.lstrip("/")
    return path


def source_file(cfg: PrepareConfig, work: Path, suffixes: tuple[str, ...], what: str) -> Path:
    """The file (or the directory holding it) an http, s3 or pvc source names; an archive is
    unpacked first. `suffixes` are the file types read as they are; `what` names them."""
    src = cfg.source
    if src.http is not None or src.s3 is not None:
        path = sources.download(src, work)
    elif src.pvc is not None:
        path = resolve_source_path(cfg)
    else:
        raise DataError(f"task {cfg.task} reads {what} (http, s3 or pvc) or a builtin")
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() not in suffixes:
        path = sources.data_root(sources.extract(path, work / "extracted"))
    return path


def get(name: str) -> Task:
    from .image import ImageClassification
    from .tabular import TabularClassification
    from .text import TextClassification

    tasks: dict[str, Task] = {
        "image-classification": ImageClassification(),
        "tabular-classification": TabularClassification(),
        "text-classification": TextClassification(),
    }
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name]
