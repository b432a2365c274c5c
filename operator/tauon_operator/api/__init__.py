"""The Tauon API: pydantic models of Dataset, TrainingJob and ModelDeployment.

These models are the single source of truth: the CRDs in `crds/` are generated from them
(`tauon-operator crds`), and the operator parses every object it reconciles through them:

    job = TrainingJob.parse(body)          # body: a kopf Body or a plain dict
    job.spec.hyperparameters.epochs        # defaults filled, validators run
"""

from types import ModuleType as _ModuleType

from .common import (
    API_VERSION,
    CATEGORY,
    GROUP,
    VERSION,
    ApiModel,
    Condition,
    ConditionStatus,
    LocalObjectRef,
    ObjectMeta,
    Resources,
    StatusModel,
)
from .dataset import (
    BuiltinSource,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    HttpSource,
    Preprocessing,
    PvcSource,
    SplitCounts,
    Splits,
    Storage,
    SyntheticSource,
)
from .modeldeployment import (
    Autoscaling,
    Batching,
    Canary,
    CanaryStatus,
    Feedback,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelSource,
    ReplicaCounts,
    ServingResources,
)
from .resource import KINDS, Dataset, ModelDeployment, PrinterColumn, Resource, TrainingJob
from .trainingjob import (
    Checkpoint,
    DataLoaderSpec,
    EarlyStopping,
    Evaluation,
    Hyperparameters,
    Metrics,
    ModelArtifact,
    ModelSpec,
    Output,
    Progress,
    TrainingJobSpec,
    TrainingJobStatus,
    WorkerResources,
)

DATASETS = Dataset.PLURAL
TRAININGJOBS = TrainingJob.PLURAL
MODELDEPLOYMENTS = ModelDeployment.PLURAL

# Condition types (kstatus: Ready, Reconciling, Stalled; job-like kinds add Succeeded, Failed).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SUCCEEDED = "Succeeded"
FAILED = "Failed"

__all__ = [
    name
    for name, value in dict(globals()).items()
    if not name.startswith("_") and not isinstance(value, _ModuleType)
]
