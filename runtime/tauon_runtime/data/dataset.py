"""Reading a prepared layout back as tensors, for training and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tauon_runtime.data.sources import DataError


@dataclass
class Split:
    x: torch.Tensor  # [N, C, H, W], 0..255 scale
    y: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return len(self.y)


class BatchDataset(torch.utils.data.Dataset):
    """Indexed by a list of sample indices, returns the whole batch at once.

    With a BatchSampler and `batch_size=None` the DataLoader skips per-sample collation, which
    on small in-memory images costs more than the model itself.
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.split.x[idx], self.split.y[idx]


class PreparedDataset:
    """A directory written by `tauon-runtime prepare`, read through its manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / "manifest.json"
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path} is not a prepared dataset manifest: {e}") from None
        self.version_dir = self.root / self.manifest["path"]

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @property
    def task(self) -> str:
        return str(self.manifest.get("task", "image-classification"))

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.manifest["shape"]
        return c, h, w

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest["preprocessing"])

    def split(self, name: str) -> Split:
        path = self.version_dir / f"{name}.safetensors"
        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types, not only OSError
            raise DataError(f"cannot read {path}: {e}") from None
        return Split(tensors["x"], tensors["y"].long())
