"""ModelDeployment -> the serve config, a Deployment of `tauon-runtime serve` (and a canary
Deployment when asked), a Service in front of both, an HPA when autoscaling is set, and a
feedback volume when feedback is on."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from tauon_operator.api import ModelDeployment
from tauon_operator.api.code import CODE_MOUNT
from tauon_operator.builders import pod
from tauon_operator.meta import PARENT_LABEL, child_name, object_meta, with_spec_hash
from tauon_operator.settings import Settings
from tauon_runtime.contract import ServeConfig
from tauon_runtime.contract.keys import (
    CONFIG_HASH_ANNOTATION,
    MODEL_DIGEST_ANNOTATION,
    TRACK_LABEL,
    feedback_key,
)
from tauon_runtime.contract.serve import CanaryForward, CustomPredictor

MODEL_MOUNT = "/models"
FEEDBACK_MOUNT = "/feedback"
REMOTE_SCHEMES = ("s3://", "https://")
FETCHED_SUBDIR = "model"  # where the storage initializer puts a remote model, under MODEL_MOUNT
STORAGE_INITIALIZER = "storage-initializer"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are and what they must hash to: a claim and a directory in it, or
    a version in object storage (`remote`) that the storage initializer fetches into an
    emptyDir before the server starts."""

    claim: str | None
    subpath: str
    sha256: str
    remote: str | None = None

    @classmethod
    def from_uri(cls, uri: str, sha256: str) -> ResolvedModel:
        if uri.startswith(REMOTE_SCHEMES):
            return cls(claim=None, subpath=FETCHED_SUBDIR, sha256=sha256, remote=uri)
        if not uri.startswith("pvc://"):
            raise ValueError(
                f"model URI {uri!r}: only pvc://, s3:// and https:// models can be served"
            )
        claim, _, sub = uri.removeprefix("pvc://").partition("/")
        sub = sub.strip("/")
        if sub.endswith(".safetensors"):  # a weights file: its directory holds the model card
            sub = sub.rpartition("/")[0]
        return cls(claim=claim, subpath=sub, sha256=sha256)


def scrape(port: int) -> dict[str, str]:
    """The plain Prometheus discovery annotations of a serving pod (its /metrics)."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def service_name(md: dict[str, Any]) -> str:
    return md["metadata"]["name"]


def deployment_name(md: dict[str, Any], canary: bool = False) -> str:
    return child_name(md["metadata"]["name"], "canary") if canary else md["metadata"]["name"]


def config_map_name(md: dict[str, Any], canary: bool = False) -> str:
    """`<deployment>-serving`, not `-config`: a TrainingJob of the same name (a common choice)
    owns `<name>-config`, and the two overwrote each other's run config."""
    return child_name(deployment_name(md, canary), "serving")


def feedback_claim_name(md: dict[str, Any]) -> str:
    return child_name(md["metadata"]["name"], "feedback")


def split_replicas(total: int, canary_percent: int | None) -> tuple[int, int]:
    """(stable, canary) replicas: the canary gets its share of traffic as a share of pods,
    at least one when its percent is above zero, and the stable track keeps at least one."""
    if not canary_percent:
        return total, 0
    canary = max(1, math.floor(total * canary_percent / 100 + 0.5))
    if canary_percent < 100:
        canary = min(canary, max(total - 1, 1))
    return max(total - canary, 0 if canary_percent == 100 else 1), canary


def url(md: dict[str, Any], settings: Settings) -> str:
    m = md["metadata"]
    return f"http://{service_name(md)}.{m['namespace']}.svc.{settings.cluster_domain}"


def model_format(md: dict[str, Any], canary: bool = False) -> str:
    """The file the track serves: safetensors (PyTorch) or onnx (onnxruntime, no torch)."""
    spec = ModelDeployment.parse_spec(md)
    source = spec.canary.model if canary and spec.canary else spec.model
    return source.format


def feedback_in_store(md: dict[str, Any], settings: Settings | None) -> bool:
    """Feedback goes to the artifact store (shared by every replica, no claim) when one is
    configured; else to a JSONL file on a claim."""
    spec = ModelDeployment.parse_spec(md)
    return spec.feedback.enabled and settings is not None and bool(settings.store_bucket)


def canary_service_name(md: dict[str, Any]) -> str:
    return child_name(md["metadata"]["name"], "canary")


def canary_url(md: dict[str, Any], settings: Settings) -> str:
    """The canary track's own Service, on the serving port itself (so that the name resolves
    to a pod where there is no kube-proxy, too)."""
    m = md["metadata"]
    return (
        f"http://{canary_service_name(md)}.{m['namespace']}.svc.{settings.cluster_domain}:"
        f"{settings.serve_port}"
    )


def serve_config(
    md: dict[str, Any],
    model: ResolvedModel,
    canary: bool = False,
    settings: Settings | None = None,
    forward_percent: float | None = None,
) -> str:
    spec = ModelDeployment.parse_spec(md)
    shared = feedback_in_store(md, settings)
    m = md["metadata"]
    cfg = ServeConfig(
        model_name=md["metadata"]["name"],
        model_dir=f"{MODEL_MOUNT}/{model.subpath}".rstrip("/"),
        expected_sha256=model.sha256,
        model_format=model_format(md, canary),
        batching=spec.batching,
        feedback=spec.feedback,
        feedback_path=(
            f"{FEEDBACK_MOUNT}/feedback.jsonl" if spec.feedback.enabled and not shared else None
        ),
        feedback_key=(
            feedback_key(settings.store_prefix, m["namespace"], m["name"])
            if shared and settings
            else None
        ),
        canary=(
            CanaryForward(url=canary_url(md, settings), traffic_percent=forward_percent)
            if forward_percent and settings
            else None
        ),
        predictor=(
            CustomPredictor(
                class_name=spec.predictor.class_name,
                code_dir=CODE_MOUNT if spec.predictor.code else None,
            )
            if spec.predictor
            else None
        ),
    )
    return cfg.model_dump_json(by_alias=True, exclude_none=True)


def _deployment(
    md: dict[str, Any],
    settings: Settings,
    model: ResolvedModel,
    replicas: int | None,
    track: str,
    forward_percent: float | None = None,
) -> list[dict[str, Any]]:
    spec = ModelDeployment.parse_spec(md)
    canary = track == "canary"
    name = deployment_name(md, canary)
    component = "server-canary" if canary else "server"
    cm_meta = object_meta(md, config_map_name(md, canary), component)
    run_config = serve_config(md, model, canary, settings, forward_percent)
    config = pod.config_map(cm_meta, run_config)
    on_claim = spec.feedback.enabled and not feedback_in_store(md, settings)
    code = spec.predictor.code if spec.predictor else None
    meta = object_meta(md, name, component, {TRACK_LABEL: track})
    selector = {PARENT_LABEL["ModelDeployment"]: md["metadata"]["name"], TRACK_LABEL: track}
    port = settings.serve_port
    # A server busy with a full batch on the CPU can take more than Kubernetes' default second
    # to answer a health check: with it, a healthy server under load left the Service's
    # endpoints (and was killed after 30 s) just when it was needed most.
    probe = lambda path, period: {  # noqa: E731
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    # The ONNX export needs no torch: the edge image (200 MiB of packages, not 5 GiB) serves it.
    edge = settings.runtime_edge_image if model_format(md, canary) == "onnx" else None
    container = pod.runtime_container(
        settings,
        "server",
        spec.image or edge,
        ["serve", "--config", pod.CONFIG_FILE, "--host", "$(POD_IP)", "--port", str(port)],
        env=[
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *(pod.store_env(settings) if feedback_in_store(md, settings) else []),
        ],
        resources=pod.compute_resources(
            str(spec.resources.cpu), str(spec.resources.memory), spec.resources.gpus
        ),
        volume_mounts=[
            {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True},
            *([{"name": "feedback", "mountPath": FEEDBACK_MOUNT}] if on_claim else []),
            *([{"name": "code", "mountPath": CODE_MOUNT, "readOnly": True}] if code else []),
        ],
    )
    init_containers = []
    if model.remote:
        # KServe's storage initializer: the version is downloaded and every file verified
        # before the server starts; a mismatch ends here, with its reason in the termination
        # message (status.modeldeployment.pod_problem).
        bucket = urlparse(model.remote).netloc if model.remote.startswith("s3://") else None
        init = pod.runtime_container(
            settings,
            STORAGE_INITIALIZER,
            spec.image or edge,
            [
                "fetch",
                "--uri",
                model.remote,
                "--sha256",
                model.sha256,
                "--dest",
                f"{MODEL_MOUNT}/{FETCHED_SUBDIR}",
            ],
            env=pod.store_env(settings, bucket) if bucket else [],
            resources=container["resources"],
            volume_mounts=[{"name": "model", "mountPath": MODEL_MOUNT}],
        )
        init_containers.append(init)
    container["ports"] = [{"name": "http", "containerPort": port}]
    container["readinessProbe"] = probe("/v2/health/ready", 2)
    container["livenessProbe"] = {**probe("/v2/health/live", 10), "initialDelaySeconds": 10}
    model_volume: dict[str, Any] = (
        {"name": "model", "emptyDir": {}}
        if model.remote
        else {
            "name": "model",
            "persistentVolumeClaim": {"claimName": model.claim, "readOnly": True},
        }
    )
    volumes = [*pod.base_volumes(cm_meta["name"]), model_volume, *([code.volume()] if code else [])]
    if on_claim:
        volumes.append(
            {"name": "feedback", "persistentVolumeClaim": {"claimName": feedback_claim_name(md)}}
        )
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector},
            # A new model rolls out without dropping capacity: surge first, then retire.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": {**meta["labels"], **selector},
                    # A new digest changes the template, and so starts a rollout. The
                    # prometheus.io/* keys serve clusters without prometheus-operator.
                    # A new run config (batching, the canary's share) rolls it too.
                    "annotations": {
                        MODEL_DIGEST_ANNOTATION: model.sha256,
                        CONFIG_HASH_ANNOTATION: hashlib.sha256(run_config.encode()).hexdigest()[
                            :16
                        ],
                        **scrape(port),
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,  # inference needs no API access
                    "enableServiceLinks": False,
                    "securityContext": pod.pod_security_context(settings),
                    **({"initContainers": init_containers} if init_containers else {}),
                    "containers": [container],
                    "volumes": volumes,
                    **pod.placement(settings, spec, spec.resources.gpus),
                },
            },
        },
    }
    if replicas is not None:  # with an HPA, the HPA owns .spec.replicas
        deployment["spec"]["replicas"] = replicas
    return [config, deployment]


def _service(
    md: dict[str, Any], name: str, component: str, track: str, port: int
) -> dict[str, Any]:
    """A Service in front of one track's pods (the split is the stable servers' to make)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(md, name, component),
        "spec": {
            "selector": {
                PARENT_LABEL["ModelDeployment"]: md["metadata"]["name"],
                TRACK_LABEL: track,
            },
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }


def build(
    md: dict[str, Any],
    settings: Settings,
    model: ResolvedModel,
    canary_model: ResolvedModel | None = None,
    canary_percent: int | None = None,
) -> list[dict[str, Any]]:
    """The serving children. `canary_percent`: the canary's share when it is not spec.canary's
    (a retraining challenger's)."""
    spec = ModelDeployment.parse_spec(md)
    name = md["metadata"]["name"]
    percent = canary_percent
    if percent is None:
        percent = spec.canary.traffic_percent if spec.canary and canary_model else None
    if canary_model is None:
        percent = None
    autoscaling = spec.autoscaling
    total = spec.desired_replicas
    stable, canary = split_replicas(total, percent)
    with_canary = canary_model is not None and canary > 0
    # The stable servers forward the canary's exact share; all of it when no stable pod is left.
    forward = percent if with_canary and (stable or autoscaling) else None
    children = _deployment(md, settings, model, None if autoscaling else stable, "stable", forward)
    if with_canary:
        assert canary_model is not None
        children += _deployment(md, settings, canary_model, canary, "canary")
        children.append(
            _service(md, canary_service_name(md), "server-canary", "canary", settings.serve_port)
        )
    front = "stable" if stable or autoscaling or not with_canary else "canary"
    main = _service(md, service_name(md), "server", front, 80)
    # The serving port too (as the canary's Service has it): the name then also reaches a pod
    # where nothing maps port 80 (no kube-proxy); the console calls the model there.
    main["spec"]["ports"].append(
        {"name": "serving", "port": settings.serve_port, "targetPort": "http"}
    )
    children.append(main)
    if autoscaling:
        children.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": object_meta(md, name, "server"),
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": deployment_name(md),
                    },
                    "minReplicas": autoscaling.min_replicas,
                    "maxReplicas": autoscaling.max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                                },
                            },
                        }
                    ],
                },
            }
        )
    if spec.feedback.enabled and not feedback_in_store(md, settings):
        children.append(pod.pvc(object_meta(md, feedback_claim_name(md), "feedback"), "1Gi", None))
    return [with_spec_hash(c) for c in children]
