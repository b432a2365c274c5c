"""JSON in with limits, strict JSON out.

Python's parser takes input that breaks the code after it: nesting deep enough to exhaust the
recursion limit, integer literals of thousands of digits (slow to convert, and too large for
any field), ``NaN``/``Infinity`` literals and ``1e400`` (parsed as infinity). :func:`loads`
refuses the first three with a :class:`BadInput` before or while parsing; infinities from
overflowing literals are refused by the checks on each field (the envelope models, the tensor
codecs), which must reject non-finite numbers anyway. :func:`dumps` never writes ``NaN``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from aiohttp import web

from .errors import BadInput

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "dumps", "loads", "response"]

MAX_DEPTH = 32  # a [N, C, H, W] tensor nested in an envelope needs 6
MAX_DIGITS = 100  # a uint64 needs 20; longer runs of digits are a denial-of-service probe

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal, escapes included
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_LONG_NUMBER = re.compile(rb"(?<![.0-9])[0-9]{%d,}" % (MAX_DIGITS + 1))  # not fraction digits
# Every digit as "0": a run of MAX_DIGITS + 1 of them is a substring search, fast on any body;
# only a body that has one pays for the regex (which tells integer from fraction digits).
_DIGITS_AS_ZERO = bytes(ord("0") if chr(b).isdigit() and b < 128 else b for b in range(256))
_LONG_RUN = b"0" * (MAX_DIGITS + 1)


def _refuse_constant(name: str) -> Any:
    raise BadInput(f"the body holds {name}, which is not JSON; send finite numbers")


def _depth(brackets: bytes) -> int:
    if len(brackets) <= MAX_DEPTH:
        return len(brackets)
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def loads(body: bytes) -> Any:
    """UTF-8 JSON bytes -> Python values; :class:`BadInput` (400) for anything out of bounds."""
    if not body.strip():
        raise BadInput("the request body is empty; send JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"the body is not valid JSON: it is not UTF-8 ({e.reason})") from None
    outside_strings = _STRING.sub(b'""', body)
    depth = _depth(outside_strings.translate(None, _NOT_BRACKETS))
    if depth > MAX_DEPTH:
        raise BadInput(f"the JSON body is nested {depth} levels deep; at most {MAX_DEPTH}")
    if _LONG_RUN in outside_strings.translate(_DIGITS_AS_ZERO) and _LONG_NUMBER.search(
        outside_strings
    ):
        raise BadInput(f"the JSON body holds a number of more than {MAX_DIGITS} digits")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # only reachable with a lower recursion limit than MAX_DEPTH needs
        raise BadInput("the JSON body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() refusing a literal past its limit
        if isinstance(e, BadInput):
            raise
        raise BadInput(f"the body is not valid JSON: {e}") from None


def dumps(value: Any) -> bytes:
    """Strict JSON (``NaN`` and infinities raise ValueError: a bug, never sent)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(value), status=status, headers=headers, content_type="application/json"
    )
