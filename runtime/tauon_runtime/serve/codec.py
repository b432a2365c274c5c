"""Request bodies to arrays: Open Inference Protocol v2 JSON tensors, plain arrays, images.

Everything here is pure (bytes or JSON in, numpy out) and raises :class:`BadInput` with a
sentence naming the problem and the HTTP status it deserves.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "V2_DATATYPES",
    "BadInput",
    "decode_image",
    "decode_v2_input",
    "encode_v2_output",
    "parse_array_body",
]

# v2 datatypes we accept as numbers; BOOL and BYTES make no sense as pixels.
V2_DATATYPES: dict[str, type[np.generic]] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"})
MAX_IMAGE_PIXELS = 50_000_000  # a decompression bomb is refused before it is decoded


class BadInput(ValueError):
    """A request the client must fix; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
    except (ValueError, TypeError, np.exceptions.VisibleDeprecationWarning):
        raise BadInput(
            f"{what} is a ragged nested list: every row must have the same length"
        ) from None
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        if arr.size == 0:
            return arr.astype(np.float64)
        raise BadInput(f"{what} must hold numbers only (found {arr.dtype.name} values)")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise BadInput(f"{what} holds NaN or infinite values")
    return arr


def decode_v2_input(
    tensor: Any, name: str, chw: tuple[int, int, int], max_batch: int
) -> tuple[np.ndarray, str]:
    """One v2 input tensor ``{name, shape, datatype, data}`` -> (float32 [N, C, H, W], datatype)."""
    if not isinstance(tensor, dict):
        raise BadInput("each entry of 'inputs' must be an object with name, shape, datatype, data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise BadInput(f"input is missing {', '.join(repr(k) for k in missing)}")
    if tensor["name"] != name:
        raise BadInput(f"unknown input {tensor['name']!r}: this model has one input named {name!r}")
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype.upper() not in V2_DATATYPES:
        raise BadInput(
            f"input {name!r} has datatype {datatype!r}; use one of {', '.join(V2_DATATYPES)}"
        )
    datatype = datatype.upper()
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadInput(
            f"input {name!r} shape must be a list of non-negative integers, got {shape!r}"
        )
    expected = [-1, *chw]
    if len(shape) != 4 or tuple(shape[1:]) != chw:
        raise BadInput(
            f"input {name!r} has shape {_shape_str(shape)}; expected {_shape_str(expected)}"
        )
    if shape[0] < 1:
        raise BadInput(f"input {name!r} has an empty batch (shape {_shape_str(shape)})")
    if shape[0] > max_batch:
        raise BadInput(f"input {name!r} has a batch of {shape[0]}; at most {max_batch} per request")
    arr = _numeric(tensor["data"], f"input {name!r} data")
    count = math.prod(shape)
    if arr.size != count:
        raise BadInput(
            f"input {name!r} has {arr.size} values but shape {_shape_str(shape)} needs {count}"
        )
    dtype = np.dtype(V2_DATATYPES[datatype])
    if dtype.kind in "iu":
        if not np.array_equal(arr, np.floor(arr)):
            raise BadInput(f"input {name!r} is {datatype} but holds non-integer values")
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise BadInput(f"input {name!r} holds values outside the range of {datatype}")
    elif dtype == np.float16 and np.abs(arr).max(initial=0) > np.finfo(np.float16).max:
        raise BadInput(f"input {name!r} holds values outside the range of FP16")
    # Round through the declared type, so FP16 data means what an FP16 tensor would mean.
    return arr.astype(dtype).astype(np.float32).reshape(shape), datatype


def encode_v2_output(name: str, array: np.ndarray | list[str], datatype: str) -> dict[str, Any]:
    if isinstance(array, np.ndarray):
        return {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
            "data": array.ravel().tolist(),
        }
    return {"name": name, "datatype": datatype, "shape": [len(array)], "data": list(array)}


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


def parse_array_body(body: Any, chw: tuple[int, int, int], max_batch: int) -> np.ndarray:
    """``{"instances": [sample, ...]}`` or ``{"array": sample | batch}`` -> float [N, C, H, W].

    A sample may be [C, H, W], [H, W, C], [H, W] for one channel, or flat C*H*W values.
    """
    expected = f"{_shape_str(chw)} (or [H, W, C], or {math.prod(chw)} flat values)"
    if not isinstance(body, dict) or ("instances" in body) == ("array" in body):
        raise BadInput(
            'JSON body must be {"instances": [sample, ...]} or {"array": sample_or_batch}'
        )
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadInput("'instances' must be a non-empty list of samples")
        if len(instances) > max_batch:
            raise BadInput(f"{len(instances)} instances; at most {max_batch} per request")
        samples = []
        for i, inst in enumerate(instances):
            arr = _numeric(inst, f"instances[{i}]")
            sample = _as_sample(arr, chw)
            if sample is None:
                raise BadInput(
                    f"instances[{i}] has shape {_shape_str(arr.shape)}; expected {expected}"
                )
            samples.append(sample)
        return np.stack(samples)
    arr = _numeric(body["array"], "'array'")
    sample = _as_sample(arr, chw)
    if sample is not None:
        return sample[None]
    if arr.ndim >= 2 and 0 < arr.shape[0] <= max_batch:
        rows = [_as_sample(row, chw) for row in arr]
        if all(r is not None for r in rows):
            return np.stack(rows)  # type: ignore[arg-type]
    raise BadInput(
        f"'array' has shape {_shape_str(arr.shape)}; expected one sample {expected} "
        f"or a batch of up to {max_batch} of them"
    )


def decode_image(data: bytes, chw: tuple[int, int, int]) -> np.ndarray:
    """PNG/JPEG/... bytes -> uint8 [C, H, W]: orientation applied, channels converted, resized."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    c, h, w = chw
    if c not in (1, 3):
        raise BadInput(
            f"this model takes {c}-channel input, which images cannot provide", status=415
        )
    if not data:
        raise BadInput("the image body is empty")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in IMAGE_FORMATS:
            raise BadInput(
                f"image format {img.format} is not accepted; send PNG or JPEG", status=415
            )
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise BadInput(
                f"image is {img.width}x{img.height}, over {MAX_IMAGE_PIXELS} pixels", status=413
            )
        decoded: Image.Image = ImageOps.exif_transpose(img)
        decoded = decoded.convert("L" if c == 1 else "RGB")
        if decoded.size != (w, h):
            decoded = decoded.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(decoded, dtype=np.uint8)
    except BadInput:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as e:
        raise BadInput(f"could not decode the image: {e}") from None
    return arr[None] if c == 1 else np.moveaxis(arr, -1, 0).copy()
