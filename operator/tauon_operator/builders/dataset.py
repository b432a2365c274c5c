"""Dataset -> a PVC for the prepared data, the run config, and a prepare Job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tauon_operator.api import API_VERSION, DATASETS, Dataset
from tauon_operator.builders import access, pod
from tauon_operator.meta import child_name, object_meta, with_spec_hash
from tauon_operator.settings import Settings
from tauon_runtime.contract import PERMANENT_EXIT_CODES, PrepareConfig
from tauon_runtime.contract.keys import feedback_key

DATA_MOUNT = "/data"
SOURCE_MOUNT = "/source"
# Exit codes that retrying cannot fix (runtime: 2 invalid config, 3 rejected) end the Job at once.
PREPARE_BACKOFF_LIMIT = 2


def claim_name(ds: dict[str, Any]) -> str:
    return child_name(ds["metadata"]["name"], "data")


def prepare_job_name(ds: dict[str, Any]) -> str:
    return child_name(ds["metadata"]["name"], "prepare")


@dataclass(frozen=True)
class BaseVersion:
    """The version a feedback source builds on: the base Dataset's status location and digest."""

    location: str
    digest: str


def run_config(
    ds: dict[str, Any], settings: Settings | None = None, base: BaseVersion | None = None
) -> str:
    spec = Dataset.parse_spec(ds)
    feedback = spec.source.feedback
    m = ds["metadata"]
    cfg = PrepareConfig(
        source=spec.source,
        task=spec.task,
        columns=spec.columns,
        format=spec.format,
        splits=spec.splits,
        preprocessing=spec.preprocessing,
        output_dir=DATA_MOUNT,
        source_dir=SOURCE_MOUNT if spec.source.pvc else None,
        base_location=base.location if base else None,
        base_digest=base.digest if base else None,
        feedback_key=(
            feedback_key(settings.store_prefix, m["namespace"], feedback.model_deployment_ref.name)
            if feedback and settings
            else None
        ),
    )
    return cfg.model_dump_json(by_alias=True, exclude_none=True)


def build(
    ds: dict[str, Any], settings: Settings, base: BaseVersion | None = None
) -> list[dict[str, Any]]:
    spec = Dataset.parse_spec(ds)
    name = ds["metadata"]["name"]
    cm_name = child_name(name, "prepare")
    claim = pod.pvc(
        object_meta(ds, claim_name(ds), "data"),
        str(spec.storage.size),
        spec.storage.storage_class_name,
    )
    config = pod.config_map(object_meta(ds, cm_name, "prepare"), run_config(ds, settings, base))

    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": DATA_MOUNT},
        {"name": "api-token", "mountPath": access.TOKEN_DIR, "readOnly": True},
    ]
    volumes = [
        *pod.base_volumes(cm_name),
        {"name": "data", "persistentVolumeClaim": {"claimName": claim_name(ds)}},
        access.token_volume(),
    ]
    if spec.source.pvc is not None:
        mounts.append({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "source",
                "persistentVolumeClaim": {
                    "claimName": spec.source.pvc.claim_name,
                    "readOnly": True,
                },
            }
        )
    container = pod.runtime_container(
        settings,
        "prepare",
        None,
        ["prepare", "--config", pod.CONFIG_FILE],
        # With an artifact store the prepared version is also published there.
        env=[*access.status_env(API_VERSION, DATASETS, ds), *pod.store_env(settings)],
        resources=pod.compute_resources("500m", "1Gi", 0),
        volume_mounts=mounts,
    )
    job_meta = object_meta(ds, prepare_job_name(ds), "prepare")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": job_meta,
        "spec": {
            "backoffLimit": PREPARE_BACKOFF_LIMIT,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "prepare",
                            "operator": "In",
                            "values": list(PERMANENT_EXIT_CODES),
                        },
                    },
                ]
            },
            "template": {
                "metadata": {"labels": dict(job_meta["labels"])},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": access.service_account_name(ds),
                    "automountServiceAccountToken": False,
                    "securityContext": pod.pod_security_context(settings),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    children = [*access.runtime_access(ds, DATASETS), claim, config, job]
    return [with_spec_hash(c) for c in children]
