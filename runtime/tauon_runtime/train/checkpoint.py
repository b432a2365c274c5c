"""Atomic checkpoints: written to a temporary file, fsync'ed, then renamed into place.

A pod killed at any moment leaves either the previous checkpoint or the new one, never half a
file. Files are named by global step (`step-00000120.pt`) so the latest one sorts last; loading
uses `weights_only=True`, so a checkpoint can carry tensors and plain data but never code.

With an artifact store (outputs go there, and the output directory is the pod's own emptyDir)
each checkpoint is also uploaded, in one PUT, under the run's key (`store.checkpoints_key`);
`keepLast` applies there too. A worker that starts with no checkpoint of its own, as every pod
of a new attempt does, downloads the latest one from the store and resumes from it.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from tauon_runtime.store import ArtifactStore

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


class StoredCheckpoints:
    """One run's checkpoints in the artifact store, under `key` (a "directory")."""

    def __init__(self, store: ArtifactStore, key: str) -> None:
        self.store, self.key = store, key

    def names(self) -> list[str]:
        found = (k.rsplit("/", 1)[-1] for k in self.store.list_keys(self.key))
        return sorted(n for n in found if _NAME.match(n))

    def upload(self, path: Path) -> str:
        return self.store.put_file(self.key + path.name, path)

    def download(self, name: str, dest: Path) -> Path:
        return self.store.download(self.key + name, dest)

    def delete(self, name: str) -> None:
        self.store.delete(self.key + name)


class Checkpointer:
    def __init__(
        self, directory: str | Path, keep_last: int, stored: StoredCheckpoints | None = None
    ) -> None:
        self.dir = Path(directory)
        self.keep_last = keep_last
        self.stored = stored
        self.location = ""  # where the latest save went: the store's URI, else the local path

    def all(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _NAME.match(p.name))

    def latest(self) -> Path | None:
        """The newest checkpoint here; when there is none, the newest one in the store,
        downloaded here first."""
        found = self.all()
        if found:
            return found[-1]
        if self.stored is not None and (names := self.stored.names()):
            return self.stored.download(names[-1], self.dir / names[-1])
        return None

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
        self.location = str(path)
        if self.stored is not None:
            self.location = self.stored.upload(path)
            for name in self.stored.names()[: -self.keep_last]:
                self.stored.delete(name)
        return path

    def load(self, path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return torch.load(path, map_location=map_location, weights_only=True)
