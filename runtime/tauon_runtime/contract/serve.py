"""The ModelDeployment's contract: batching and feedback, and the run config `tauon-runtime
serve` reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ContractModel, Sha256
from .train import Device

# Which of an exported model's files is served, by which backend: model.safetensors in PyTorch,
# or model.onnx (the edge export) in onnxruntime, with no torch (the runtime-edge image).
ModelFormat = Literal["safetensors", "onnx"]


class Batching(ContractModel):
    """Dynamic batching: requests that arrive together are run as one batch."""

    max_batch_size: int = Field(32, ge=1, le=4096, description="Largest batch run at once.")
    max_latency_ms: int = Field(
        5, ge=0, le=10_000, description="Longest a request waits for others to join its batch."
    )


class Feedback(ContractModel):
    """Collect user feedback on predictions (`POST /v1/feedback`) for retraining."""

    enabled: bool = Field(False, description="Accept and store feedback.")
    retention_days: int = Field(30, ge=1, le=3650, description="Days feedback is kept.")


class CanaryForward(ContractModel):
    """Runtime only: where the stable track sends the canary's share of prediction requests."""

    url: str = Field(
        min_length=8, description="The canary's Service, e.g. http://web-canary.ns.svc:8080."
    )
    traffic_percent: float = Field(ge=0, le=100, description="Share of prediction requests sent.")


class CustomPredictor(ContractModel):
    """A user's predictor class (`load(model_dir)`, `predict(instances)`), served instead of
    the built-in classifier."""

    class_name: str = Field(min_length=3, description="`module:Class`.")
    code_dir: str | None = Field(
        None, description="Runtime only: a directory put first on sys.path (the code volume)."
    )


class ServeConfig(ContractModel):
    """What `tauon-runtime serve` reads."""

    model_name: str = Field(min_length=1, description="Name in the v2 protocol's URLs.")
    model_dir: str = Field(description="Directory with model.safetensors and model.json.")
    expected_sha256: Sha256 | None = Field(
        None, description="Refuse to load weights with another sha256 (exit code 3)."
    )
    model_format: ModelFormat = Field(
        "safetensors",
        description="safetensors: PyTorch serves model.safetensors; onnx: onnxruntime serves "
        "model.onnx, without importing torch.",
    )
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    host: str = Field("0.0.0.0", description="Address to listen on.")
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1, description="Larger bodies get 413.")
    request_timeout_seconds: float = Field(30, gt=0, description="Per-request timeout.")
    drain_seconds: float = Field(
        3,
        ge=0,
        le=300,
        description="After SIGTERM, keep answering (while reporting not ready) "
        "this long, so Services stop routing here before the listener closes: a rollout drops "
        "no request.",
    )
    feedback: Feedback = Field(default_factory=Feedback, description="User feedback collection.")
    feedback_path: str | None = Field(
        None, description="Runtime only: the JSONL file feedback is appended to (on a volume)."
    )
    canary: CanaryForward | None = Field(
        None,
        description="Runtime only (the stable track of a canary rollout): forward exactly this "
        "share of prediction requests to the canary.",
    )
    feedback_key: str | None = Field(
        None,
        description="Runtime only: the artifact-store key (TAUON_STORE_*) below which every "
        "replica of the deployment shares its predictions and feedback; wins over feedbackPath.",
    )
    device: Device = Field("auto", description="auto picks CUDA when present.")
    predictor: CustomPredictor | None = Field(
        None, description="Serve through a user's predictor class instead of the classifier."
    )
    top_k: int = Field(5, ge=1, le=1000, description="Labels returned by /v1/predict.")
