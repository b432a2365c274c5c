"""Data: preparing a Dataset's source into a verified layout, and reading that layout back.

`prepare` and the sources need no torch; `PreparedDataset` (for training) imports it lazily.
"""

from tauon_runtime.data.prepare import prepare
from tauon_runtime.data.sources import DataError, DataIntegrityError

__all__ = ["DataError", "DataIntegrityError", "PreparedDataset", "prepare"]


def __getattr__(name: str):  # torch only when training asks for it
    if name == "PreparedDataset":
        from tauon_runtime.data.dataset import PreparedDataset

        return PreparedDataset
    raise AttributeError(name)
