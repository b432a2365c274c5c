"""Atomic checkpoints: written to a temporary file, fsync'ed, then renamed into place.

A pod killed at any moment leaves either the previous checkpoint or the new one, never half a
file. Files are named by global step (`step-00000120.pt`) so the latest one sorts last; loading
uses `weights_only=True`, so a checkpoint can carry tensors and plain data but never code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # the legacy tuple: (name, keys, pos, ...)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class Checkpointer:
    def __init__(self, directory: str | Path, keep_last: int) -> None:
        self.dir = Path(directory)
        self.keep_last = keep_last

    def all(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _NAME.match(p.name))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, state: dict[str, Any], step: int) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step-{step:08d}.pt"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for old in self.all()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def load(self, path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return torch.load(path, map_location=map_location, weights_only=True)
