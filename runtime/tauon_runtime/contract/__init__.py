"""The contract between the operator and the runtime: one torch-free definition of what the
operator hands a runtime process.

The spec pieces a user writes (the model, the recipe, the sources, batching ...) are defined
here once; the operator's API models (`tauon_operator.api`) embed them, so the CRDs are
generated from the same classes the runtime parses, and a default or a limit cannot drift. The
run configs (`PrepareConfig`, `TrainConfig`, `ServeConfig`) add the runtime-only paths; exit
codes, environment variables and annotation keys are in `keys`. Importing this package must
not import torch (the operator image has none; a test guards it).
"""

from .base import DNS_LABEL, DNS_SUBDOMAIN, SHA256_HEX, ContractModel, Sha256, cel, immutable, rules
from .data import (
    TABULAR_BUILTINS,
    BuiltinSource,
    Columns,
    DatasetFormat,
    DatasetSource,
    FeedbackSource,
    HttpSource,
    PrepareConfig,
    Preprocessing,
    PvcSource,
    S3Source,
    Splits,
    SyntheticSource,
    Task,
)
from .keys import PERMANENT_EXIT_CODES, ExitCode
from .serve import Batching, Feedback, ServeConfig
from .train import (
    ARCHITECTURES,
    TASK_ARCHITECTURES,
    Architecture,
    Checkpoint,
    DataLoaderSpec,
    Device,
    EarlyStopping,
    Evaluation,
    Hyperparameters,
    ModelSpec,
    Output,
    Precision,
    TrainConfig,
)

__all__ = [
    "ARCHITECTURES",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "PERMANENT_EXIT_CODES",
    "SHA256_HEX",
    "TABULAR_BUILTINS",
    "TASK_ARCHITECTURES",
    "Architecture",
    "Batching",
    "BuiltinSource",
    "Checkpoint",
    "Columns",
    "ContractModel",
    "DataLoaderSpec",
    "DatasetFormat",
    "DatasetSource",
    "Device",
    "EarlyStopping",
    "Evaluation",
    "ExitCode",
    "Feedback",
    "FeedbackSource",
    "HttpSource",
    "Hyperparameters",
    "ModelSpec",
    "Output",
    "Precision",
    "PrepareConfig",
    "Preprocessing",
    "PvcSource",
    "S3Source",
    "ServeConfig",
    "Sha256",
    "Splits",
    "SyntheticSource",
    "Task",
    "TrainConfig",
    "cel",
    "immutable",
    "rules",
]
