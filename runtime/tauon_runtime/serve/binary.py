"""The Open Inference Protocol's binary tensor data extension, both ways.

A request may carry its JSON header first and tensors after it, raw: the
``Inference-Header-Content-Length`` HTTP header gives the JSON's length, and each input sent
this way says ``"parameters": {"binary_data_size": n}`` instead of ``data`` (its bytes follow in
the order of ``inputs``). An output is answered the same way when the request asks for it
(``binary_data`` on the output, or ``binary_data_output`` on the request). Tensors are
little-endian, row-major; a BYTES element is a 4-byte little-endian length, then its bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from aiohttp import web

from .envelope import RequestInput
from .errors import BadInput
from .jsonio import dumps

__all__ = ["EXTENSION", "HEADER", "bytes_tensor", "response", "split_request", "take_inputs"]

EXTENSION = "binary_tensor_data"  # its name in server metadata
HEADER = "Inference-Header-Content-Length"
_LENGTH = re.compile(r"\s*[0-9]{1,15}\s*")


def split_request(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """-> (the JSON part, the binary part after it)."""
    if header_length is None:
        return body, memoryview(b"")
    if not _LENGTH.fullmatch(header_length):
        raise BadInput(f"{HEADER} must be a byte count, got {header_length[:40]!r}")
    n = int(header_length)
    if n > len(body):
        raise BadInput(f"{HEADER} is {n} but the body has only {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def take_inputs(inputs: Sequence[RequestInput], tail: memoryview) -> list[memoryview | None]:
    """Each input's binary data (None for inputs sent as JSON); all of ``tail`` must be used."""
    out: list[memoryview | None] = []
    offset = 0
    for tensor in inputs:
        size = tensor.binary_size
        if size is None:
            out.append(None)
            continue
        if offset + size > len(tail):
            raise BadInput(
                f"input {tensor.name!r} declares {size} bytes of binary data but only "
                f"{len(tail) - offset} follow the JSON header (is {HEADER} set?)"
            )
        out.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise BadInput(
            f"{len(tail) - offset} bytes follow the JSON header that no input's "
            "binary_data_size accounts for"
        )
    return out


def bytes_tensor(items: Sequence[str]) -> bytes:
    parts = []
    for item in items:
        data = item.encode("utf-8")
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def response(header: dict[str, object], chunks: Sequence[bytes]) -> web.Response:
    """The JSON header, then each binary output in order; plain JSON when there is none."""
    head = dumps(header)
    if not chunks:
        return web.Response(body=head, content_type="application/json")
    return web.Response(
        body=b"".join([head, *chunks]),
        content_type="application/octet-stream",
        headers={HEADER: str(len(head))},
    )
