"""Request bodies to arrays: Open Inference Protocol v2 tensors (JSON or binary), plain arrays.

Everything here is pure (validated envelopes and bytes in, numpy out) and raises
:class:`BadInput` with a sentence naming the problem and the HTTP status it deserves. Every
array handed to the model is float32 and finite: a value outside the FP32 range (``1e39``)
would otherwise turn into infinity, then NaN probabilities.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import binary
from .envelope import PredictRequest, RequestInput
from .errors import BadInput

__all__ = [
    "V2_DATATYPES",
    "BadInput",
    "decode_v2_input",
    "decode_v2_tensor",
    "encode_v2_output",
    "parse_array_body",
]

# v2 datatypes we accept as numbers (little-endian on the wire); BOOL and BYTES make no sense
# as pixels. BF16 has no numpy type: its 16 bits are the top half of an FP32.
V2_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
FP32_MAX = float(np.finfo(np.float32).max)
MAX_TEXT_CHARS = 10_000  # one text in a request, for a text model
TextEncoder = Callable[[list[str]], np.ndarray]  # texts -> float32 [N, L, 1, 1] token ids


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _numeric(data: Any, what: str) -> np.ndarray:
    """Nested or flat JSON numbers to a float64 array, refusing strings, bools, ragged lists."""
    if not isinstance(data, list | tuple):
        raise BadInput(
            f"{what} must be a list of numbers (flat or nested), got {type(data).__name__}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError, np.exceptions.VisibleDeprecationWarning):
        raise BadInput(
            f"{what} is a ragged nested list: every row must have the same length"
        ) from None
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        if arr.size == 0:
            return arr.astype(np.float64)
        raise BadInput(f"{what} must hold numbers only (found {arr.dtype.name} values)")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise BadInput(f"{what} holds NaN, infinite or out-of-range values")
    return arr


def as_model_input(values: np.ndarray, what: str) -> np.ndarray:
    """Any numeric array -> float32, refusing what FP32 cannot hold (the model computes in it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = values.astype(np.float32)
    if not np.isfinite(x).all():
        raise BadInput(
            f"{what} holds NaN, infinite, or out-of-range values (FP32 holds |x| <= {FP32_MAX:.4g})"
        )
    return x


def _from_json(tensor: RequestInput, datatype: str, count: int) -> np.ndarray:
    name = tensor.name
    arr = _numeric(tensor.data, f"input {name!r} data")
    if arr.size != count:
        raise BadInput(
            f"input {name!r} has {arr.size} values but shape {_shape_str(tensor.shape)} "
            f"needs {count}"
        )
    dtype = V2_DATATYPES[datatype]
    if datatype == "BF16":
        return arr
    if dtype.kind in "iu":
        if not np.array_equal(arr, np.floor(arr)):
            raise BadInput(f"input {name!r} is {datatype} but holds non-integer values")
        info = np.iinfo(dtype)
        if arr.min(initial=0) < info.min or arr.max(initial=0) > info.max:
            raise BadInput(f"input {name!r} holds values outside the range of {datatype}")
        return arr
    # Round through the declared type, so FP16 data means what an FP16 tensor would mean.
    with np.errstate(over="ignore"):
        typed = arr.astype(dtype)
    if not np.isfinite(typed).all():
        raise BadInput(f"input {name!r} holds values outside the range of {datatype}")
    return typed


def _from_binary(tensor: RequestInput, datatype: str, count: int, data: memoryview) -> np.ndarray:
    dtype = V2_DATATYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise BadInput(
            f"input {tensor.name!r} has {len(data)} bytes of binary data but shape "
            f"{_shape_str(tensor.shape)} of {datatype} needs {count * dtype.itemsize}"
        )
    values = np.frombuffer(data, dtype=dtype)
    if datatype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values


def encode_texts(texts: list[Any], encoder: TextEncoder | None, what: str) -> np.ndarray:
    """Texts of a request -> the text model's input, refusing what is not a bounded string."""
    if encoder is None:
        raise BadInput(f"{what}: this model does not take text; send numbers (see its metadata)")
    for i, t in enumerate(texts):
        where = what if len(texts) == 1 else f"{what}[{i}]"
        if not isinstance(t, str):
            raise BadInput(f"{where} must be a string, got {type(t).__name__}")
        if len(t) > MAX_TEXT_CHARS:
            raise BadInput(f"{where} has {len(t)} characters; at most {MAX_TEXT_CHARS}")
    return encoder([str(t) for t in texts])


def _bytes_elements(tensor: RequestInput, count: int, data: memoryview | None) -> list[Any]:
    """A BYTES tensor's elements: JSON strings, or binary 4-byte little-endian length + UTF-8."""
    if data is None:
        items = tensor.data if isinstance(tensor.data, list) else [tensor.data]
        flat: list[Any] = []
        for item in items:
            flat.extend(item if isinstance(item, list) else [item])
        if len(flat) != count:
            raise BadInput(
                f"input {tensor.name!r} has {len(flat)} strings but shape "
                f"{_shape_str(tensor.shape)} needs {count}"
            )
        return flat
    out: list[Any] = []
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            raise BadInput(f"input {tensor.name!r}: binary BYTES data ends inside a length")
        (n,) = struct.unpack_from("<I", data, at)
        if at + 4 + n > len(data):
            raise BadInput(f"input {tensor.name!r}: a string of {n} bytes runs past the data")
        try:
            out.append(bytes(data[at + 4 : at + 4 + n]).decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput(f"input {tensor.name!r}: element {len(out)} is not UTF-8") from None
        at += 4 + n
    if len(out) != count:
        raise BadInput(
            f"input {tensor.name!r} has {len(out)} strings but shape "
            f"{_shape_str(tensor.shape)} needs {count}"
        )
    return out


def _decode_v2_text(
    tensor: RequestInput, max_batch: int, data: memoryview | None, encoder: TextEncoder | None
) -> np.ndarray:
    name, shape = tensor.name, tensor.shape
    if encoder is None:
        raise BadInput(
            f"input {name!r} has datatype BYTES, but this model takes numbers: use one of "
            f"{', '.join(V2_DATATYPES)}"
        )
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        raise BadInput(
            f"input {name!r} has shape {_shape_str(shape)}; a text model takes BYTES [N] or "
            "[N, 1]: one string per text"
        )
    if shape[0] > max_batch:
        raise BadInput(f"input {name!r} has a batch of {shape[0]}; at most {max_batch} per request")
    return encode_texts(_bytes_elements(tensor, shape[0], data), encoder, f"input {name!r}")


def _check_datatype(tensor: RequestInput, datatype: str) -> None:
    if datatype not in V2_DATATYPES:
        raise BadInput(
            f"input {tensor.name!r} has datatype {tensor.datatype!r}; use one of "
            f"{', '.join(V2_DATATYPES)}"
        )


def _check_batch(tensor: RequestInput, shape: Sequence[int], max_batch: int) -> None:
    if not shape or shape[0] < 1:
        raise BadInput(f"input {tensor.name!r} has an empty batch (shape {_shape_str(shape)})")
    if shape[0] > max_batch:
        raise BadInput(
            f"input {tensor.name!r} has a batch of {shape[0]}; at most {max_batch} per request"
        )


def decode_v2_input(
    tensor: RequestInput,
    name: str,
    chw: tuple[int, int, int],
    max_batch: int,
    data: memoryview | None = None,
    text_encoder: TextEncoder | None = None,
) -> np.ndarray:
    """One v2 input tensor (its binary data, if sent so) -> float32 [N, C, H, W]; a text
    model's BYTES tensor (one string per text) goes through its tokenizer."""
    if tensor.name != name:
        raise BadInput(f"unknown input {tensor.name!r}: this model has one input named {name!r}")
    datatype = tensor.datatype.upper()
    if datatype == "BYTES":
        return _decode_v2_text(tensor, max_batch, data, text_encoder)
    _check_datatype(tensor, datatype)
    shape = tensor.shape
    expected = [-1, *chw]
    if chw[1:] == (1, 1) and len(shape) == 2 and shape[1] == chw[0]:
        shape = [*shape, 1, 1]  # a tabular model's rows: [N, F] is [N, F, 1, 1]
    if len(shape) != 4 or tuple(shape[1:]) != chw:
        raise BadInput(
            f"input {name!r} has shape {_shape_str(shape)}; expected {_shape_str(expected)}"
        )
    _check_batch(tensor, shape, max_batch)
    count = math.prod(shape)
    if data is None:
        values = _from_json(tensor, datatype, count)
    else:
        values = _from_binary(tensor, datatype, count, data)
    return as_model_input(values, f"input {name!r}").reshape(shape)


def decode_v2_tensor(
    tensor: RequestInput, max_batch: int, data: memoryview | None = None
) -> np.ndarray:
    """Any numeric v2 input tensor -> its values, in its own shape and datatype: the rows a
    predictor class gets, one per instance."""
    datatype = tensor.datatype.upper()
    _check_datatype(tensor, datatype)
    shape = tensor.shape
    _check_batch(tensor, shape, max_batch)
    count = math.prod(shape)
    if data is not None:
        return _from_binary(tensor, datatype, count, data).reshape(shape)
    values = _from_json(tensor, datatype, count)  # checked against the type's range
    return values.astype(np.float32 if datatype == "BF16" else V2_DATATYPES[datatype]).reshape(
        shape
    )


def encode_v2_output(
    name: str, values: np.ndarray | list[str], datatype: str, as_binary: bool = False
) -> tuple[dict[str, Any], bytes | None]:
    """-> (the output's JSON, its binary data when ``as_binary``)."""
    shape = list(values.shape) if isinstance(values, np.ndarray) else [len(values)]
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if not as_binary:
        out["data"] = values.ravel().tolist() if isinstance(values, np.ndarray) else list(values)
        return out, None
    if isinstance(values, np.ndarray):
        raw = np.ascontiguousarray(values, dtype=V2_DATATYPES[datatype]).tobytes()
    else:
        raw = binary.bytes_tensor(values)
    out["parameters"] = {"binary_data_size": len(raw)}
    return out, raw


def _as_sample(arr: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray | None:
    """One sample in any unambiguous layout -> [C, H, W]; None when the shape does not fit."""
    c, h, w = chw
    if arr.shape == chw:
        return arr
    if arr.shape == (h, w, c):
        return np.moveaxis(arr, -1, 0)
    if c == 1 and arr.shape == (h, w):
        return arr[None]
    if arr.shape == (c * h * w,):
        return arr.reshape(chw)
    return None


def parse_feature_rows(
    rows: dict[str, Any] | list[dict[str, Any]], names: list[str], max_batch: int
) -> np.ndarray:
    """``{name: value}`` rows of a tabular model -> float32 [N, F, 1, 1] in the card's order."""
    if not names:
        raise BadInput('this model takes no named features; send {"instances": [...]} instead')
    batch = [rows] if isinstance(rows, dict) else rows
    if not 0 < len(batch) <= max_batch:
        raise BadInput(f"'features' has {len(batch)} rows; send 1 to {max_batch}")
    out = np.empty((len(batch), len(names)), dtype=np.float32)
    for i, row in enumerate(batch):
        where = "features" if isinstance(rows, dict) else f"features[{i}]"
        missing = [n for n in names if n not in row]
        unknown = [k for k in row if k not in names]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing[:10]))}")
            if unknown:
                parts.append(f"unknown {', '.join(repr(k[:64]) for k in unknown[:10])}")
            raise BadInput(f"{where}: {'; '.join(parts)}; this model takes {', '.join(names)}")
        for j, name in enumerate(names):
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadInput(f"{where}.{name} must be a number, got {str(value)[:40]!r}")
            out[i, j] = value
    return as_model_input(out, "'features'")[:, :, None, None]


def parse_array_body(
    body: PredictRequest,
    chw: tuple[int, int, int],
    max_batch: int,
    features: list[str] | None = None,
    text_encoder: TextEncoder | None = None,
) -> np.ndarray:
    """``{"instances": [sample, ...]}`` or ``{"array": sample | batch}`` -> float32 [N, C, H, W];
    ``{"features": ...}`` for a tabular model, ``{"text": "..." | [...]}`` for a text model.

    A sample may be [C, H, W], [H, W, C], [H, W] for one channel, or flat C*H*W values.
    """
    if body.features is not None:
        return parse_feature_rows(body.features, features or [], max_batch)
    if body.text is not None:
        texts = [body.text] if isinstance(body.text, str) else list(body.text)
        if not 0 < len(texts) <= max_batch:
            raise BadInput(f"'text' has {len(texts)} texts; send 1 to {max_batch}")
        return encode_texts(texts, text_encoder, "'text'")
    expected = f"{_shape_str(chw)} (or [H, W, C], or {math.prod(chw)} flat values)"
    if body.instances is not None:
        if len(body.instances) > max_batch:
            raise BadInput(f"{len(body.instances)} instances; at most {max_batch} per request")
        samples = []
        for i, inst in enumerate(body.instances):
            arr = _numeric(inst, f"instances[{i}]")
            sample = _as_sample(arr, chw)
            if sample is None:
                raise BadInput(
                    f"instances[{i}] has shape {_shape_str(arr.shape)}; expected {expected}"
                )
            samples.append(sample)
        batch = np.stack(samples)
    else:
        arr = _numeric(body.array, "'array'")
        sample = _as_sample(arr, chw)
        if sample is not None:
            batch = sample[None]
        else:
            rows = (
                [_as_sample(row, chw) for row in arr]
                if arr.ndim >= 2 and 0 < arr.shape[0] <= max_batch
                else [None]
            )
            if any(r is None for r in rows):
                raise BadInput(
                    f"'array' has shape {_shape_str(arr.shape)}; expected one sample {expected} "
                    f"or a batch of up to {max_batch} of them"
                )
            batch = np.stack(rows)  # type: ignore[arg-type]
    return as_model_input(batch, "the array")
