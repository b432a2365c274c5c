"""A user's predictor class behind the server's endpoints (KServe's custom model idea).

The class is `module:Class` (ModelDeployment.spec.predictor.className), imported from the code
volume. It is built with no arguments and has two methods::

    class Generator:
        def load(self, model_dir: str) -> None:      # once, before the server reports ready
            card, weights = tauon_runtime.sdk.load_weights(model_dir)   # verified, no pickle
            ...
        def predict(self, instances: list) -> list:  # a batch: one output per instance
            ...

Requests reach `predict` through the dynamic batcher, so a batch holds instances of several
requests. An instance is what the client sent: one element of `/v1/predict`'s `instances`
(any JSON value), or one row of the OIP v2 input tensor (a NumPy array). An output is any JSON
value or a NumPy array; on OIP v2, outputs that are arrays of one shape become one tensor,
anything else a BYTES tensor of JSON texts. A predictor that raises `ValueError` on an instance
answers 400 with its message; any other exception is a 500, like a failing forward pass.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from tauon_runtime.modelfiles import read_verified

from . import binary, jsonio
from .codec import V2_DATATYPES, decode_v2_tensor, encode_v2_output
from .envelope import MAX_SAMPLES_PER_REQUEST, InferenceRequest, PredictRequest, parse
from .errors import BadInput
from .model import ServedModel

log = logging.getLogger(__name__)

__all__ = [
    "CustomModel",
    "Refused",
    "check_refused",
    "input_bytes",
    "instances_array",
    "load_class",
    "output_label",
    "outputs_json",
    "v1_instances",
    "v2_instances",
    "v2_outputs",
]

# NumPy dtype -> the OIP v2 datatype of an output tensor.
_V2_NAMES = {np.dtype(v).str: k for k, v in V2_DATATYPES.items() if k not in ("BF16", "BYTES")}


def load_class(class_name: str, code_dir: str | None) -> type:
    """Import `module:Class`, with `code_dir` first on sys.path. Raises ValueError saying
    which part is missing."""
    module_name, _, attr = class_name.partition(":")
    if code_dir and code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        where = f" in {code_dir}" if code_dir else ""
        raise ValueError(
            f"predictor {class_name}: cannot import {module_name!r}{where}: {e}"
        ) from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ValueError(f"predictor {class_name}: module {module_name!r} has no class {attr!r}")
    for method in ("load", "predict"):
        if not callable(getattr(cls, method, None)):
            raise ValueError(f"predictor {class_name}: the class has no {method}() method")
    return cls


def instances_array(instances: list[Any]) -> np.ndarray:
    """A list as a 1-D object array: what the batcher concatenates and slices."""
    arr = np.empty(len(instances), dtype=object)
    for i, value in enumerate(instances):
        arr[i] = value
    return arr


class Refused:
    """The output of an instance the predictor refused (it raised ValueError)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def check_refused(outputs: np.ndarray) -> None:
    """A request with a refused instance is a 400 with the predictor's message."""
    for i, out in enumerate(outputs):
        if isinstance(out, Refused):
            where = f"instance {i}" if len(outputs) > 1 else "the input"
            raise BadInput(f"the predictor refused {where}: {out.message[:500]}")


class CustomModel(ServedModel):
    """The served model when it is a user's class: the same name, digest and card as a
    built-in one, and `forward` over a batch of instances (not pixels to probabilities)."""

    format = "custom"  # type: ignore[assignment]

    def __init__(self, predictor: Any, card: dict[str, Any], name: str, class_name: str) -> None:
        # Not the classifier's __init__: no input shape, preprocessing or classes to check.
        self.predictor = predictor
        self.card = card
        self.name = name
        self.device = "cpu"
        self.digest = str(card.get("sha256", ""))
        self.architecture = class_name
        self.classes = [str(c) for c in getattr(predictor, "classes", None) or []]
        self.chw = (0, 0, 0)
        self.input_name = "input"
        self.features = []
        self.encode_text = None

    @classmethod
    def load_predictor(
        cls,
        model_dir: str,
        name: str,
        expected_sha256: str | None,
        class_name: str,
        code_dir: str | None,
    ) -> CustomModel:
        """Check the weights' digest first (a predictor never sees unverified weights), then
        build the class and call its load()."""
        started = time.perf_counter()
        card, _ = read_verified(model_dir, expected_sha256)
        predictor = load_class(class_name, code_dir)()
        predictor.load(model_dir)
        log.info(
            "predictor %s loaded model %s, sha256 %s, in %.2fs",
            class_name,
            name,
            card.get("sha256"),
            time.perf_counter() - started,
        )
        return cls(predictor, card, name, class_name)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The predictor over a batch. A ValueError (its word on an input) must not fail the
        other requests batched with the bad one: the batch is then retried one instance at a
        time, and each refused instance's output is a Refused that its request answers 400."""
        try:
            outputs = self._predict(batch)
        except ValueError as e:
            if len(batch) == 1:
                return instances_array([Refused(str(e))])
            return instances_array([self._one(instance) for instance in batch])
        return instances_array(outputs)

    def _one(self, instance: Any) -> Any:
        try:
            return self._predict(instances_array([instance]))[0]
        except ValueError as e:
            return Refused(str(e))

    def _predict(self, batch: np.ndarray) -> list[Any]:
        outputs = list(self.predictor.predict(list(batch)))
        if len(outputs) != len(batch):
            raise RuntimeError(
                f"predictor {self.architecture}.predict returned {len(outputs)} outputs "
                f"for {len(batch)} instances"
            )
        return outputs

    def warm_up(self, batch_size: int) -> None:
        """A predictor may name an `example` instance; without one there is nothing to run."""
        example = getattr(self.predictor, "example", None)
        if example is not None:
            self.forward(instances_array([example] * max(1, batch_size)))


def v1_instances(body: bytes) -> np.ndarray:
    """`{"instances": [...]}` -> the instances (the only /v1/predict form a predictor takes)."""
    req = parse(PredictRequest, jsonio.loads(body), "the JSON body")
    if req.instances is None:
        raise BadInput('a predictor class takes {"instances": [instance, ...]}')
    return instances_array(req.instances)


def v2_instances(body: bytes, header_length: str | None) -> tuple[np.ndarray, InferenceRequest]:
    """The one input tensor's rows as instances."""
    head, tail = binary.split_request(body, header_length)
    req = parse(InferenceRequest, jsonio.loads(head), "the v2 infer body")
    if len(req.inputs) != 1:
        raise BadInput(f"'inputs' must list exactly 1 tensor; got {len(req.inputs)}")
    [data] = binary.take_inputs(req.inputs, tail)
    rows = decode_v2_tensor(req.inputs[0], MAX_SAMPLES_PER_REQUEST, data)
    return instances_array([np.asarray(row) for row in rows]), req  # arrays, 0-d for [N]


def input_bytes(instance: Any) -> np.ndarray:
    """What a prediction record keeps of an instance: its array, or its JSON text."""
    if isinstance(instance, np.ndarray | np.generic):
        return np.asarray(instance)
    return np.frombuffer(json.dumps(instance).encode(), dtype=np.uint8)


def output_label(output: Any) -> str:
    """The label feedback is compared with: a scalar output as text (an action, a class)."""
    value = _jsonable(output)
    return str(value) if isinstance(value, str | int | float | bool) else ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def outputs_json(outputs: np.ndarray) -> list[Any]:
    """Outputs as JSON values (/v1/predict); a value JSON cannot hold is the predictor's bug."""
    values = [_jsonable(v) for v in outputs]
    try:
        json.dumps(values, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RuntimeError(f"the predictor's output is not JSON: {e}") from None
    return values


def v2_outputs(outputs: np.ndarray, as_binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """One OIP v2 output tensor named `output`: the outputs stacked when they are arrays of
    one numeric shape, else one JSON text per instance (BYTES)."""
    arrays = [np.asarray(v) for v in outputs]
    if arrays and all(a.dtype.str in _V2_NAMES and a.shape == arrays[0].shape for a in arrays):
        stacked = np.stack(arrays)
        return encode_v2_output("output", stacked, _V2_NAMES[stacked.dtype.str], as_binary)
    texts = [json.dumps(v, allow_nan=False) for v in outputs_json(outputs)]
    return encode_v2_output("output", texts, "BYTES", as_binary)
