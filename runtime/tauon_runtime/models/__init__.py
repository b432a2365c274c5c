"""The model zoo and exported models (safetensors + model card)."""

from tauon_runtime.contract import ARCHITECTURES
from tauon_runtime.models.export import (
    ModelIntegrityError,
    export_model,
    load_exported,
    normalize_input,
    unwrap,
)
from tauon_runtime.models.zoo import build_model

__all__ = [
    "ARCHITECTURES",
    "ModelIntegrityError",
    "build_model",
    "export_model",
    "load_exported",
    "normalize_input",
    "unwrap",
]
