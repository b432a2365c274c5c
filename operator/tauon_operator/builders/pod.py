"""What every pod we create shares: the restricted Pod Security profile and the runtime image."""

from __future__ import annotations

from typing import Any

from tauon_operator import queueing
from tauon_operator.settings import Settings
from tauon_runtime.contract.keys import (
    ENV_NAMESPACE,
    ENV_STORE_BUCKET,
    ENV_STORE_ENDPOINT,
    ENV_STORE_PREFIX,
    ENV_STORE_REGION,
    ENV_TERMINATION_LOG,
    STORE_SECRET_KEYS,
)

CONFIG_MOUNT = "/etc/tauon"
CONFIG_FILE = f"{CONFIG_MOUNT}/run.json"
TERMINATION_LOG = "/dev/termination-log"


def pod_security_context(settings: Settings) -> dict[str, Any]:
    uid = settings.run_as_user
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def runtime_container(
    settings: Settings,
    name: str,
    image: str | None,
    args: list[str],
    env: list[dict] | None = None,
    resources: dict | None = None,
    volume_mounts: list[dict] | None = None,
) -> dict[str, Any]:
    """`tauon-runtime <args>` with its run config mounted and the results written where the
    operator reads them (the termination message)."""
    return {
        "name": name,
        "image": image or settings.runtime_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tauon-runtime"],
        "args": args,
        "env": [
            {"name": ENV_TERMINATION_LOG, "value": TERMINATION_LOG},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
            *(env or []),
        ],
        "resources": resources or {},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *(volume_mounts or []),
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def store_env(settings: Settings, bucket: str | None = None) -> list[dict[str, Any]]:
    """How a runtime container reaches the artifact store: endpoint, bucket, prefix and region
    as values, the credentials only by reference to the Secret (never copied into a spec)."""
    bucket = bucket or settings.store_bucket
    if not bucket:
        return []
    env: list[dict[str, Any]] = [
        {"name": ENV_STORE_ENDPOINT, "value": settings.store_endpoint},
        {"name": ENV_STORE_BUCKET, "value": bucket},
        {"name": ENV_STORE_PREFIX, "value": settings.store_prefix},
        {"name": ENV_STORE_REGION, "value": settings.store_region},
        {"name": ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if settings.store_secret:
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": settings.store_secret, "key": k}}}
            for k in STORE_SECRET_KEYS
        ]
    return env


def base_volumes(config_map: str) -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "tmp", "emptyDir": {}},
    ]


def config_map(meta: dict[str, Any], run_config: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"run.json": run_config},
    }


def pvc(
    meta: dict[str, Any],
    size: str,
    storage_class: str | None,
    access_modes: tuple[str, ...] = ("ReadWriteOnce",),
) -> dict[str, Any]:
    """A claim every StorageClass can bind: ReadWriteOnce, as block storage (EBS, PD) offers.
    Models and datasets that travel go to the artifact store, not to shared volumes."""
    spec: dict[str, Any] = {
        "accessModes": list(access_modes),
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def compute_resources(cpu: str, memory: str, gpus: int) -> dict[str, Any]:
    requests = {"cpu": str(cpu), "memory": str(memory)}
    limits: dict[str, Any] = {"memory": str(memory)}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def placement(settings: Settings, spec: Any, gpus: int) -> dict[str, Any]:
    """Where a pod may run: the spec's tolerations (after the chart's GPU tolerations, for a pod
    that asks for GPUs, as the ExtendedResourceToleration admission plugin would add them),
    node selector, affinity and priority class, passed through as the API server accepted
    them. Only the keys that are set."""
    tolerations = [*(settings.gpu_tolerations if gpus else ()), *(spec.tolerations or ())]
    out: dict[str, Any] = {
        "tolerations": [dict(t) for t in tolerations],
        "nodeSelector": dict(spec.node_selector or {}),
        "affinity": dict(spec.affinity or {}),
        "priorityClassName": spec.priority_class_name,
    }
    return {k: v for k, v in out.items() if v}


def update_job(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """A Job's pod template is immutable: an attempt keeps its pods. Only suspension follows
    the spec in place, and only on a Job the operator suspends itself: a Job in a Kueue queue is
    suspended and resumed by Kueue (another controller's field: never fought over)."""
    if queueing.queue_name(desired) or queueing.queue_name(current):
        return None
    want = bool(desired["spec"].get("suspend", False))
    if bool(current["spec"].get("suspend")) != want:
        return {"spec": {"suspend": want}}
    return None


def update_claim(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """A claim's spec is immutable once bound (but for growing): created once, then left as
    it is."""
    return None


# How children that already exist are updated, for the kinds that cannot be re-applied.
UPDATES = {"Job": update_job, "PersistentVolumeClaim": update_claim}
