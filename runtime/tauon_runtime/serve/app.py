"""HTTP routes of the inference server (aiohttp).

- Open Inference Protocol v2: ``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{name}``,
  ``/v2/models/{name}/ready``, ``/v2/models/{name}/infer`` (also under ``/versions/{version}``).
  The one input, ``input`` [-1, C, H, W], is on the 0..255 pixel scale of every Tauon data set;
  the server normalises it as the model card says.
- ``POST /v1/predict``: an image (``image/*`` body or multipart files) or JSON
  ``{"instances": [...]}`` / ``{"array": ...}``; top-k labels and a prediction id per sample.
- ``POST /v1/feedback``, ``GET /v1/feedback/stats``; ``GET /metrics``.

Every error is JSON ``{"error": "..."}`` with a 4xx/5xx status (the transport's own answers too,
when served by :func:`make_runner`), every 200 is strict JSON (no ``NaN``), and nothing a client
sends can stop the server: bodies are read within limits (:mod:`.transport`), JSON is parsed
with limits (:mod:`.jsonio`), envelopes are validated as models (:mod:`.envelope`), tensors
(:mod:`.codec`, :mod:`.binary`) and images (:mod:`.images`) are checked before they reach the
model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from aiohttp import web

from tauon_runtime.contract import ServeConfig
from tauon_runtime.store import ArtifactStore, StoreConfig, StoreError

from . import binary, canary, custom, jsonio
from .batcher import Arrival, BatcherClosed, DynamicBatcher, Overloaded
from .codec import decode_v2_input, encode_v2_output, parse_array_body
from .envelope import (
    MAX_SAMPLES_PER_REQUEST,
    FeedbackRequest,
    InferenceRequest,
    PredictRequest,
    parse,
)
from .errors import BadInput
from .feedback import FeedbackStore, PredictionCache, make_record
from .images import decode_image
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
from .model import ServedModel
from .shared_feedback import SharedFeedback
from .transport import ServeRunner, read_body, read_files

log = logging.getLogger(__name__)

__all__ = ["STATE", "ServeState", "activate", "create_app", "make_runner"]

SERVER_NAME = "tauon"
SERVER_VERSION = "0.1.0"
DECODE_THREADS = 2  # images decoded at once: the memory decoding holds is this many budgets
KEEP_INPUT_BYTES = 1 << 20  # inputs larger than this are summarised, not kept for feedback
INLINE_PARSE_BYTES = 256 << 10  # larger bodies are parsed off the event loop
OUTPUTS = ("probabilities", "labels")
# What the canary split applies to: the prediction routes, never health, metadata or feedback.
CANARY_ROUTES = frozenset(
    {
        "/v1/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
)
T = TypeVar("T")


@dataclass
class ServeState:
    config: ServeConfig
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    predictions: PredictionCache = field(default_factory=PredictionCache)
    feedback: FeedbackStore | SharedFeedback | None = None
    model: ServedModel | None = None
    batcher: DynamicBatcher | None = None
    canary: canary.CanaryForwarder | None = None  # stable track: forwards the canary's share
    decoder: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            DECODE_THREADS, thread_name_prefix="tauon-decode"
        )
    )
    ready: bool = False  # the model is loaded and warm: requests are answered
    draining: bool = False  # shutting down: still answering, but no longer reporting ready

    @property
    def reports_ready(self) -> bool:
        """What the readiness endpoints say: Services route here only while this is true."""
        return self.ready and not self.draining

    def require_model(self, name: str) -> ServedModel:
        if name != self.config.model_name:
            raise web.HTTPNotFound(
                text=f"unknown model {name!r}; this server serves {self.config.model_name!r}"
            )
        if self.model is None or self.batcher is None or not self.ready:
            raise web.HTTPServiceUnavailable(text=f"model {name!r} is not ready yet")
        return self.model

    def count_unparsed(self, status: int) -> None:
        """A request the transport answered itself (malformed, or its headers too slow)."""
        self.metrics.requests.labels("unparsed", "other", str(status)).inc()
        self.metrics.errors.labels("unparsed", _reason(status)).inc()


STATE = web.AppKey("tauon_serve_state", ServeState)

_REASONS = {
    400: "bad_input",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
    504: "timeout",
}


def _reason(code: int) -> str:
    return _REASONS.get(code, "internal" if code >= 500 else f"http_{code}")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return jsonio.response({"error": message}, status=status, headers=headers)


@web.middleware
async def _observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON error and count every request."""
    state = request.app[STATE]
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except BadInput as e:
        response = _error(e.status, str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        response = _error(
            e.status,
            message,
            headers={k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")},
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = _error(500, "internal error; see the server log")
    code = response.status
    forwarded = request.get(canary.FORWARDED)
    if forwarded:
        state.metrics.canary_forwarded.labels(forwarded).inc()
    if forwarded == "ok":  # the canary's request: counted by the canary's own metrics
        state.metrics.canary_latency.observe(time.perf_counter() - started)
        return response
    state.metrics.requests.labels(route, state.metrics.method(request.method), str(code)).inc()
    state.metrics.request_latency.labels(route).observe(time.perf_counter() - started)
    if code >= 400:
        state.metrics.errors.labels(route, _reason(code)).inc()
    return response


# ------------------------------------------------------------------------------------------
# Body reading


async def _read_body(request: web.Request) -> bytes:
    config = request.app[STATE].config
    return await read_body(request, config.max_request_bytes, config.request_timeout_seconds)


async def _off_loop(size: int, fn: Callable[..., Any], *args: Any) -> Any:
    if size <= INLINE_PARSE_BYTES:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _infer(state: ServeState, inputs: np.ndarray, arrival: Arrival) -> np.ndarray:
    assert state.batcher is not None
    timeout = state.config.request_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            probs = await state.batcher.submit(inputs, arrival)
    except TimeoutError:
        raise web.HTTPGatewayTimeout(text=f"inference did not finish within {timeout:g}s") from None
    except Overloaded as e:
        raise web.HTTPServiceUnavailable(
            text=f"server overloaded: {e}; retry later", headers={"Retry-After": "1"}
        ) from None
    except BatcherClosed as e:
        raise web.HTTPServiceUnavailable(text=str(e)) from None
    if probs.dtype != object and not np.isfinite(probs).all():  # overflow inside the model
        raise BadInput(
            "the model's output is not finite for this input; send values on the 0..255 pixel scale"
        )
    return probs


def _remember(state: ServeState, probs: np.ndarray, samples: np.ndarray, source: str) -> list[str]:
    """Give each prediction an id and remember it (with its input) for feedback. A predictor
    class's outputs are remembered under their text when they are scalars (an action, say)."""
    assert state.model is not None
    classes = state.model.classes
    ids = []
    custom_model = isinstance(state.model, custom.CustomModel)
    top = range(len(probs)) if custom_model else probs.argmax(axis=1)
    shared = state.feedback if isinstance(state.feedback, SharedFeedback) else None
    for i, k in enumerate(top):
        pid = shared.new_id() if shared else str(uuid.uuid4())
        if custom_model:
            label, score, sample = (
                custom.output_label(probs[i]),
                1.0,
                custom.input_bytes(samples[i]),
            )
        else:
            label, score, sample = classes[int(k)], float(probs[i, k]), samples[i]
        record = make_record(pid, label, score, source, sample, KEEP_INPUT_BYTES)
        if shared:  # every replica can join feedback to it, after a restart too
            shared.record(record, state.model.digest)
        else:
            state.predictions.put(record)
        state.metrics.count_prediction(label)
        ids.append(pid)
    return ids


# ------------------------------------------------------------------------------------------
# Open Inference Protocol v2


async def live(request: web.Request) -> web.Response:
    return jsonio.response({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = request.app[STATE].reports_ready
    return jsonio.response({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return jsonio.response(
        {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [binary.EXTENSION]}
    )


def _version(model: ServedModel) -> str:
    return str(model.card.get("version", "1"))


def _versioned_model(request: web.Request) -> ServedModel:
    model = request.app[STATE].require_model(request.match_info["name"])
    version = request.match_info.get("version")
    if version is not None and version != _version(model):
        raise web.HTTPNotFound(
            text=f"model {model.name!r} has no version {version!r}; it serves {_version(model)!r}"
        )
    return model


async def model_metadata(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = _versioned_model(request)
    if isinstance(model, custom.CustomModel):
        return jsonio.response(
            {
                "name": model.name,
                "versions": [_version(model)],
                "platform": "custom",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1]}],
                "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1]}],
                "parameters": {
                    "predictor": model.architecture,
                    "sha256": model.digest,
                    "task": model.card.get("task") or "custom",
                    "maxBatchSize": state.config.batching.max_batch_size,
                },
            }
        )
    c, h, w = model.chw
    return jsonio.response(
        {
            "name": model.name,
            "versions": [_version(model)],
            "platform": "pytorch",
            # A text model takes one string per text (its tokenizer is inside the server).
            "inputs": [
                {"name": model.input_name, "datatype": "BYTES", "shape": [-1]}
                if model.encode_text
                else {"name": model.input_name, "datatype": "FP32", "shape": [-1, c, h, w]}
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1]},
            ],
            "parameters": {
                "architecture": model.architecture,
                "sha256": model.digest,
                "classes": model.classes,
                "preprocessing": model.card.get("preprocessing") or {},
                "maxBatchSize": state.config.batching.max_batch_size,
                # what a form for this model asks for: the task, and a tabular model's columns
                "task": model.card.get("task") or "image-classification",
                **({"features": model.features} if model.features else {}),
            },
        }
    )


async def model_ready(request: web.Request) -> web.Response:
    """Agrees with metadata and infer: 404 for another model or (once loaded) another version."""
    state = request.app[STATE]
    name = request.match_info["name"]
    if name != state.config.model_name:
        raise web.HTTPNotFound(
            text=f"unknown model {name!r}; this server serves {state.config.model_name!r}"
        )
    if state.model is not None and "version" in request.match_info:
        _versioned_model(request)
    return jsonio.response(
        {"name": name, "ready": state.reports_ready}, status=200 if state.reports_ready else 503
    )


def _parse_v2(
    body: bytes, header_length: str | None, model: ServedModel
) -> tuple[np.ndarray, InferenceRequest]:
    head, tail = binary.split_request(body, header_length)
    req = parse(InferenceRequest, jsonio.loads(head), "the v2 infer body")
    if len(req.inputs) != 1:
        raise BadInput(
            f"'inputs' must list exactly 1 tensor named {model.input_name!r}; got {len(req.inputs)}"
        )
    [data] = binary.take_inputs(req.inputs, tail)
    x = decode_v2_input(
        req.inputs[0], model.input_name, model.chw, MAX_SAMPLES_PER_REQUEST, data, model.encode_text
    )
    return x, req


async def infer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = _versioned_model(request)
    assert state.batcher is not None
    if isinstance(model, custom.CustomModel):
        return await _custom_infer(request, state, model)
    with state.batcher.arrival() as arrival:
        body = await _read_body(request)
        x, req = await _off_loop(
            len(body), _parse_v2, body, request.headers.get(binary.HEADER), model
        )
        wanted = [(o.name, req.wants_binary(o)) for o in req.outputs or []] or [
            (name, req.wants_binary(None)) for name in OUTPUTS
        ]
        unknown = [name for name, _ in wanted if name not in OUTPUTS]
        if unknown:
            raise BadInput(
                f"unknown output {unknown[0][:256]!r}; this model has {', '.join(OUTPUTS)}"
            )
        probs = await _infer(state, x, arrival)
    ids = _remember(state, probs, x, "v2")
    outputs, chunks = [], []
    for name, as_binary in wanted:
        if name == "probabilities":
            out, raw = encode_v2_output(name, probs.astype(np.float32), "FP32", as_binary)
        else:
            labels = [model.classes[int(k)] for k in probs.argmax(axis=1)]
            out, raw = encode_v2_output(name, labels, "BYTES", as_binary)
        outputs.append(out)
        if raw is not None:
            chunks.append(raw)
    response: dict[str, Any] = {
        "model_name": model.name,
        "model_version": _version(model),
        "outputs": outputs,
        "parameters": {"predictionIds": ids, "modelDigest": model.digest},
    }
    if req.id is not None:
        response["id"] = req.id
    return binary.response(response, chunks)


async def _custom_infer(
    request: web.Request, state: ServeState, model: custom.CustomModel
) -> web.Response:
    assert state.batcher is not None
    with state.batcher.arrival() as arrival:
        body = await _read_body(request)
        x, req = await _off_loop(
            len(body), custom.v2_instances, body, request.headers.get(binary.HEADER)
        )
        for o in req.outputs or []:
            if o.name != "output":
                raise BadInput(f"unknown output {o.name[:256]!r}; this model has 'output'")
        outputs = await _infer(state, x, arrival)
    custom.check_refused(outputs)
    ids = _remember(state, outputs, x, "v2")
    as_binary = req.wants_binary(req.outputs[0] if req.outputs else None)
    out, raw = custom.v2_outputs(outputs, as_binary)
    response: dict[str, Any] = {
        "model_name": model.name,
        "model_version": _version(model),
        "outputs": [out],
        "parameters": {"predictionIds": ids, "modelDigest": model.digest},
    }
    if req.id is not None:
        response["id"] = req.id
    return binary.response(response, [raw] if raw is not None else [])


# ------------------------------------------------------------------------------------------
# /v1: predict and feedback


JSON_TYPES = frozenset({"application/json", "text/json"})
# What curl -d, a bare POST or a generic client sends: the body tells what it is.
SNIFF_TYPES = frozenset(
    {"application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)


async def _predict_inputs(
    request: web.Request, state: ServeState, model: ServedModel
) -> tuple[np.ndarray, np.ndarray, str]:
    """-> (inputs for the model, inputs to remember, source)."""
    config = state.config
    content_type = request.content_type
    loop = asyncio.get_running_loop()
    if content_type == "multipart/form-data":
        files = await read_files(
            request,
            config.max_request_bytes,
            config.request_timeout_seconds,
            MAX_SAMPLES_PER_REQUEST,
        )
        if not files:
            raise BadInput("the multipart form has no file part; attach the image as a file")
        images = []
        for filename, data in files:
            try:
                images.append(
                    await loop.run_in_executor(state.decoder, decode_image, data, model.chw)
                )
            except BadInput as e:
                raise BadInput(f"file {filename[:256]!r}: {e}", e.status) from None
        pixels = np.stack(images)
        return pixels.astype(np.float32), pixels, "image"
    if not (
        content_type.startswith("image/")
        or content_type in JSON_TYPES
        or content_type in SNIFF_TYPES
    ):
        raise BadInput(
            f"unsupported Content-Type {content_type[:100]!r}; send image/png, image/jpeg, "
            "multipart/form-data with image files, or application/json",
            status=415,
        )
    body = await _read_body(request)
    is_json = content_type in JSON_TYPES or (
        content_type in SNIFF_TYPES and body.lstrip()[:1] == b"{"
    )
    if is_json:

        def parse_arrays() -> np.ndarray:
            req = parse(PredictRequest, jsonio.loads(body), "the JSON body")
            return parse_array_body(
                req, model.chw, MAX_SAMPLES_PER_REQUEST, model.features, model.encode_text
            )

        x = await _off_loop(len(body), parse_arrays)
        return x, x, "array"
    pixels = (await loop.run_in_executor(state.decoder, decode_image, body, model.chw))[None]
    return pixels.astype(np.float32), pixels, "image"


def _top_k(request: web.Request, default: int, num_classes: int) -> int:
    raw = request.query.get("topK") or request.query.get("top_k")
    if raw is None:
        return min(default, num_classes)
    try:
        k = int(raw)
    except ValueError:
        raise BadInput(f"topK must be an integer, got {raw!r}") from None
    if k < 1:
        raise BadInput("topK must be at least 1")
    return min(k, num_classes)


async def predict(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = state.require_model(state.config.model_name)
    assert state.batcher is not None
    if isinstance(model, custom.CustomModel):
        return await _custom_predict(request, state, model)
    k = _top_k(request, state.config.top_k, len(model.classes))
    with state.batcher.arrival() as arrival:
        x, remembered, source = await _predict_inputs(request, state, model)
        probs = await _infer(state, x, arrival)
    ids = _remember(state, probs, remembered, source)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    predictions = []
    for i, pid in enumerate(ids):
        top = [{"label": model.classes[int(j)], "score": float(probs[i, j])} for j in order[i]]
        predictions.append(
            {"predictionId": pid, "label": top[0]["label"], "score": top[0]["score"], "topK": top}
        )
    return jsonio.response(
        {"predictions": predictions, "modelName": model.name, "modelDigest": model.digest}
    )


async def _custom_predict(
    request: web.Request, state: ServeState, model: custom.CustomModel
) -> web.Response:
    """`{"instances": [...]}` through the predictor class: one output per instance."""
    assert state.batcher is not None
    if request.content_type not in JSON_TYPES | SNIFF_TYPES:
        raise BadInput('a predictor class takes application/json {"instances": [...]}', 415)
    with state.batcher.arrival() as arrival:
        body = await _read_body(request)
        x = await _off_loop(len(body), custom.v1_instances, body)
        outputs = await _infer(state, x, arrival)
    custom.check_refused(outputs)
    ids = _remember(state, outputs, x, "array")
    predictions = [
        {"predictionId": pid, "output": out}
        for pid, out in zip(ids, custom.outputs_json(outputs), strict=True)
    ]
    return jsonio.response(
        {"predictions": predictions, "modelName": model.name, "modelDigest": model.digest}
    )


async def _shared(call: Awaitable[T]) -> T:
    """A feedback store call; a store that cannot be reached is a 503 that names it."""
    try:
        return await call
    except StoreError as e:
        raise web.HTTPServiceUnavailable(
            text=f"the feedback store cannot be reached: {e}", headers={"Retry-After": "5"}
        ) from None


async def feedback(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = state.require_model(state.config.model_name)
    if state.feedback is None:
        raise web.HTTPNotFound(text="feedback is not enabled on this deployment (feedback.enabled)")
    body = parse(FeedbackRequest, jsonio.loads(await _read_body(request)), "feedback")
    true_label = body.given_label
    if true_label is not None and model.classes and true_label not in model.classes:
        shown = ", ".join(model.classes[:20]) + (", ..." if len(model.classes) > 20 else "")
        raise BadInput(f"label {true_label[:100]!r} is not one of the model's classes: {shown}")
    pid = body.prediction_id
    if isinstance(state.feedback, SharedFeedback):
        record = await _shared(state.feedback.lookup(pid))
    else:
        record = state.predictions.get(pid)
    if record is None:
        raise web.HTTPNotFound(
            text=f"unknown prediction id {pid!r} (unknown, or too old to be remembered)"
        )
    correct = None if true_label is None else true_label == record.label
    entry = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "predictionId": pid,
        "modelName": model.name,
        # the model that made the prediction (a canary's, say), not necessarily this one
        "modelDigest": record.model_digest or model.digest,
        "predictedAt": record.created.isoformat(),
        "predictedLabel": record.label,
        "predictedScore": record.score,
        "trueLabel": true_label,
        "correct": correct,
        "score": body.score,
        "input": record.input_summary(),
    }
    await _shared(state.feedback.append_async(entry))
    state.metrics.feedback.labels("unknown" if correct is None else str(correct).lower()).inc()
    return jsonio.response({"stored": True, "predictionId": pid, "correct": correct}, status=201)


async def feedback_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.feedback is None:
        return jsonio.response({"enabled": False})
    if isinstance(state.feedback, SharedFeedback):
        stats = await _shared(state.feedback.stats_async())
        return jsonio.response({"enabled": True, **stats.as_dict()})
    return jsonio.response({"enabled": True, **state.feedback.stats.as_dict()})


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.batcher is not None:
        state.metrics.queue_depth.set(state.batcher.depth)
    return web.Response(
        body=state.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


# ------------------------------------------------------------------------------------------
# Application and lifecycle


async def activate(app: web.Application, model: ServedModel) -> None:
    """Attach a loaded model: warm it up, start the batcher, then (only then) report ready."""
    state = app[STATE]
    cfg = state.config.batching
    await asyncio.get_running_loop().run_in_executor(None, model.warm_up, cfg.max_batch_size)
    m = state.metrics

    def on_batch(size: int, seconds: float) -> None:
        m.batch_size.observe(size)
        m.inference_latency.observe(seconds)

    batcher = DynamicBatcher(
        model.forward,
        max_batch_size=cfg.max_batch_size,
        max_latency_ms=cfg.max_latency_ms,
        on_batch=on_batch,
        on_queue_depth=m.queue_depth.set,
    )
    await batcher.start()
    state.model, state.batcher = model, batcher
    m.track_labels(model.classes)
    m.model_info.labels(model.name, model.architecture, model.digest, str(model.device)).set(1)
    m.model_ready.set(1)
    if isinstance(state.feedback, SharedFeedback):
        await state.feedback.start()
    if state.canary is not None:
        await state.canary.start()
    state.ready = True
    log.info(
        "model %s ready (batching: max %d samples, %g ms)",
        model.name,
        cfg.max_batch_size,
        cfg.max_latency_ms,
    )


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.ready = False
    state.metrics.model_ready.set(0)
    if state.batcher is not None:
        await state.batcher.stop(drain_seconds=min(10.0, state.config.request_timeout_seconds))
    if isinstance(state.feedback, SharedFeedback):
        await state.feedback.stop()  # the last predictions' segment, before the process exits


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    if state.canary is not None:
        await state.canary.stop()
    state.decoder.shutdown(wait=False)


def open_feedback(config: ServeConfig) -> FeedbackStore | SharedFeedback:
    """Where feedback goes: the artifact store (shared by every replica) when feedbackKey is
    set, else a JSONL file on a volume (one replica)."""
    if config.feedback_key:
        store_config = StoreConfig.from_env()
        if store_config is None:
            raise ValueError("feedbackKey needs the artifact store's TAUON_STORE_* environment")
        return SharedFeedback(
            ArtifactStore(store_config), config.feedback_key, config.feedback.retention_days
        )
    if not config.feedback_path:
        raise ValueError(
            "feedback.enabled needs feedbackKey (the artifact store) or feedbackPath (a JSONL file)"
        )
    store = FeedbackStore(config.feedback_path, config.feedback.retention_days)
    store.open()
    return store


def create_app(config: ServeConfig, model: ServedModel | None = None) -> web.Application:
    """The aiohttp application. With ``model`` it activates on startup; without, it starts
    unready and :func:`activate` is called once the model has loaded."""
    state = ServeState(config=config)
    middlewares: list[Any] = [_observe]
    if config.canary is not None and config.canary.traffic_percent > 0:
        state.canary = canary.CanaryForwarder(
            config.canary.url, config.canary.traffic_percent, config.request_timeout_seconds
        )
        middlewares.append(canary.middleware(state.canary, _read_body, CANARY_ROUTES))
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=middlewares)
    if config.feedback.enabled:
        state.feedback = open_feedback(config)
    app[STATE] = state

    r = app.router
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    r.add_get("/v2", server_metadata)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r.add_get(prefix, model_metadata)
        r.add_get(prefix + "/ready", model_ready)
        r.add_post(prefix + "/infer", infer)
    r.add_post("/v1/predict", predict)
    r.add_post("/v1/feedback", feedback)
    r.add_get("/v1/feedback/stats", feedback_stats)
    r.add_get("/metrics", metrics)

    if model is not None:

        async def _activate(app: web.Application) -> None:
            await activate(app, model)

        app.on_startup.append(_activate)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


def make_runner(app: web.Application, **kwargs: Any) -> ServeRunner:
    """The runner to serve ``app`` with: the transport's own answers are JSON, and request
    headers must arrive within the request timeout."""
    state = app[STATE]
    return ServeRunner(
        app,
        header_timeout=state.config.request_timeout_seconds,
        on_error=state.count_unparsed,
        **kwargs,
    )
