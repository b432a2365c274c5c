"""Prometheus collectors of the inference server, in a registry of their own.

A registry per server (not the process-wide default) keeps two servers in one process, as in
the tests, from colliding on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]

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
            "Samples predicted, by predicted label (watch for drift).",
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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
