"""Prometheus collectors of the inference server, in a registry of their own.

A registry per server (not the process-wide default) keeps two servers in one process, as in
the tests, from colliding on metric names. No label takes its values from the client
unbounded: HTTP methods outside the standard ones count as ``other``, and predicted labels
beyond the first :data:`MAX_PREDICTION_LABELS` classes of the model as ``other`` too (a model
with 20,000 classes must not make 20,000 series).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "MAX_PREDICTION_LABELS", "ServeMetrics"]

MAX_PREDICTION_LABELS = 100
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

# Latencies from sub-millisecond (a tiny CNN on a warm CPU) to a slow request near its timeout.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tauon_serve_requests",
            "HTTP requests handled, by route template, method and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            "tauon_serve_request_duration_seconds",
            "Time from request received to response ready, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "tauon_serve_errors",
            "Requests that failed, by route template and reason (bad_input, too_large, "
            "unsupported_media_type, not_found, timeout, overloaded, internal).",
            ["route", "reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "tauon_serve_batch_size",
            "Samples per forward pass formed by the dynamic batcher.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "tauon_serve_inference_duration_seconds",
            "Duration of one batched forward pass (preprocessed tensor in, probabilities out).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tauon_serve_queue_depth",
            "Requests waiting for the batcher.",
            registry=r,
        )
        self.predictions = Counter(
            "tauon_serve_predictions",
            "Samples predicted, by predicted label (the first 100 classes; the rest as other).",
            ["label"],
            registry=r,
        )
        self.model_info = Gauge(
            "tauon_serve_model_info",
            "The model being served (value 1); the digest is the sha256 of its weights.",
            ["model", "architecture", "digest", "device"],
            registry=r,
        )
        self.model_ready = Gauge(
            "tauon_serve_model_ready",
            "1 once the model is loaded and warmed up, else 0.",
            registry=r,
        )
        self.feedback = Counter(
            "tauon_serve_feedback",
            "Feedback records stored, by whether the prediction was correct "
            "(true, false, or unknown when only a score was given).",
            ["correct"],
            registry=r,
        )
        self.canary_forwarded = Counter(
            "tauon_serve_canary_forwarded",
            "Prediction requests this stable server sent to the canary: ok (the canary's answer "
            "was relayed) or fallback (it gave none; served here, and counted as a request here).",
            ["outcome"],
            registry=r,
        )
        self.canary_latency = Histogram(
            "tauon_serve_canary_forward_duration_seconds",
            "Time to relay one request the canary answered.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self._prediction_labels: frozenset[str] = frozenset()

    def track_labels(self, classes: list[str]) -> None:
        """Give the model's first classes a series each (at 0, so rates start from there)."""
        self._prediction_labels = frozenset(classes[:MAX_PREDICTION_LABELS])
        for label in self._prediction_labels:
            self.predictions.labels(label)
        if len(classes) > MAX_PREDICTION_LABELS:
            self.predictions.labels(OTHER)

    def count_prediction(self, label: str) -> None:
        self.predictions.labels(label if label in self._prediction_labels else OTHER).inc()

    @staticmethod
    def method(name: str) -> str:
        return name if name in METHODS else OTHER

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
