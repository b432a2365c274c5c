"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tauon_runtime.contract.keys import (
    ENV_STORE_BUCKET,
    ENV_STORE_ENDPOINT,
    ENV_STORE_PREFIX,
    ENV_STORE_REGION,
)

DEFAULT_RUNTIME_IMAGE = "ghcr.io/tauon-dev/tauon-runtime:0.1.0"
DEFAULT_RUNTIME_EDGE_IMAGE = "ghcr.io/tauon-dev/tauon-runtime-edge:0.1.0"  # no torch: onnx serving


@dataclass(frozen=True)
class Settings:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    runtime_edge_image: str = DEFAULT_RUNTIME_EDGE_IMAGE
    image_pull_policy: str = "IfNotPresent"
    # Empty: every namespace (ClusterRole); else only these (per-namespace Roles).
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8000
    health_port: int = 8081
    # Numeric, non-root: the restricted Pod Security profile for every pod we create.
    run_as_user: int = 65532
    master_port: int = 29500  # torchrun's rendezvous port on worker 0
    serve_port: int = 8080
    cluster_domain: str = "cluster.local"
    # The artifact store (S3-compatible object storage); no bucket: models stay on PVCs. The
    # credentials Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) must exist in each
    # namespace that trains or serves from the store: pods read it by secretKeyRef.
    store_endpoint: str = ""
    store_bucket: str = ""
    store_prefix: str = "tauon"
    store_region: str = "us-east-1"
    store_secret: str = ""
    # Added to every pod that asks for GPUs (the chart's `gpuTolerations`: GPU node pools are
    # usually tainted nvidia.com/gpu so that nothing else lands there).
    gpu_tolerations: tuple[dict[str, Any], ...] = ()
    # How often a ModelDeployment that collects feedback reads its servers' counts.
    feedback_poll_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        ns = tuple(n.strip() for n in env.get("TAUON_NAMESPACES", "").split(",") if n.strip())
        return cls(
            runtime_image=env.get("TAUON_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE),
            runtime_edge_image=env.get("TAUON_RUNTIME_EDGE_IMAGE") or DEFAULT_RUNTIME_EDGE_IMAGE,
            image_pull_policy=env.get("TAUON_IMAGE_PULL_POLICY", "IfNotPresent"),
            namespaces=ns,
            metrics_port=int(env.get("TAUON_METRICS_PORT", "8000")),
            health_port=int(env.get("TAUON_HEALTH_PORT", "8081")),
            run_as_user=int(env.get("TAUON_RUN_AS_USER", "65532")),
            cluster_domain=env.get("TAUON_CLUSTER_DOMAIN", "cluster.local"),
            store_endpoint=env.get(ENV_STORE_ENDPOINT, ""),
            store_bucket=env.get(ENV_STORE_BUCKET, ""),
            store_prefix=env.get(ENV_STORE_PREFIX, "tauon"),
            store_region=env.get(ENV_STORE_REGION) or "us-east-1",
            store_secret=env.get("TAUON_STORE_SECRET", ""),
            gpu_tolerations=_tolerations(env.get("TAUON_GPU_TOLERATIONS", "")),
            feedback_poll_seconds=float(env.get("TAUON_FEEDBACK_POLL_SECONDS", "30")),
        )


def _tolerations(text: str) -> tuple[dict[str, Any], ...]:
    """TAUON_GPU_TOLERATIONS: a JSON list of core/v1 Tolerations (the chart checks their shape
    with its values schema; the API server checks them again in every pod)."""
    if not text.strip():
        return ()
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError("TAUON_GPU_TOLERATIONS must be a JSON list of tolerations")
    return tuple(value)
