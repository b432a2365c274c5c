"""HTTP transport: reading bodies within limits, and a server whose own answers are JSON too.

aiohttp answers some requests itself, before any handler runs: a malformed request line or
header, an encoding it cannot decode. :class:`ServeRunner` serves the app with a protocol whose
error answers are ``{"error": ...}`` like the app's, and which times out a request whose
headers trickle in (aiohttp times out only idle connections, after an hour). The readers below
give every transport failure (a body that is not the gzip it claims, a NUL in a multipart part
header, an encoding we do not decode) a 4xx and a sentence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_server import Server

from .errors import BadInput
from .jsonio import dumps

log = logging.getLogger(__name__)

__all__ = ["ServeRunner", "read_body", "read_files"]

DECODED_ENCODINGS = ("gzip", "deflate")  # what aiohttp decodes without optional packages
CHUNK = 1 << 16


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


# ------------------------------------------------------------------------------------------
# Reading requests


def check_encoding(request: web.BaseRequest) -> None:
    """One Content-Encoding that the parser decodes, or none; else 415."""
    tokens = [
        t.strip().lower()
        for value in request.headers.getall("Content-Encoding", [])
        for t in value.split(",")
    ]
    tokens = [t for t in tokens if t and t != "identity"]
    if not tokens:
        return
    if len(tokens) > 1 or len(request.headers.getall("Content-Encoding")) > 1:
        raise BadInput(
            "stacked Content-Encodings are not supported; send one of gzip, deflate", 415
        )
    if tokens[0] not in DECODED_ENCODINGS:
        raise BadInput(
            f"Content-Encoding {tokens[0][:40]!r} is not supported; send gzip, deflate or none",
            415,
        )


def check_length(request: web.BaseRequest, limit: int) -> None:
    """A declared Content-Length over the limit gets 413 before anything is read."""
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(
            f"request body of {request.content_length} bytes is over the limit of {limit} bytes",
            413,
        )


async def within(timeout: float, reading: Awaitable[Any]) -> Any:
    """A client that trickles its body in is cut off at the request timeout (408)."""
    try:
        async with asyncio.timeout(timeout):
            return await reading
    except TimeoutError:
        raise BadInput(f"the request body did not arrive within {timeout:g}s", 408) from None


async def read_body(request: web.BaseRequest, limit: int, timeout: float) -> bytes:
    """The whole body, decoded, at most ``limit`` bytes (after decoding)."""
    check_encoding(request)
    check_length(request, limit)
    try:
        return cast(bytes, await within(timeout, request.read()))  # client_max_size: 413
    except web.HTTPRequestEntityTooLarge:
        raise BadInput(f"request body is over the limit of {limit} bytes", 413) from None
    except (RequestPayloadError, HttpProcessingError) as e:
        raise BadInput(f"could not read the request body: {_payload_error(e)}") from None


def _payload_error(e: BaseException) -> str:
    cause = e.__cause__ or e
    message = getattr(cause, "message", None) or str(cause)
    return _first_line(str(message)) or type(cause).__name__


async def read_files(
    request: web.BaseRequest, limit: int, timeout: float, max_files: int
) -> list[tuple[str, bytes]]:
    """The file parts of a multipart/form-data body -> [(name, bytes)], at most ``limit`` bytes."""
    check_encoding(request)
    check_length(request, limit)

    async def collect() -> list[tuple[str, bytes]]:
        files: list[tuple[str, bytes]] = []
        total = 0
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                return files
            if not isinstance(part, BodyPartReader):
                raise BadInput("nested multipart bodies are not supported")
            data = bytearray()
            while chunk := await part.read_chunk(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise BadInput(f"request body is over the limit of {limit} bytes", 413)
                data += chunk
            if part.filename is not None:
                if len(files) == max_files:
                    raise BadInput(f"more than {max_files} images; at most {max_files} per request")
                files.append((part.filename or part.name or "file", bytes(data)))

    try:
        return cast(list[tuple[str, bytes]], await within(timeout, collect()))
    except (ValueError, HttpProcessingError, RequestPayloadError, AssertionError, LookupError) as e:
        if isinstance(e, BadInput):
            raise
        raise BadInput(f"could not parse the multipart form: {_payload_error(e)}") from None


# ------------------------------------------------------------------------------------------
# The server


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Protocol(RequestHandler):
    """aiohttp's protocol with JSON error answers and a deadline for request headers."""

    def __init__(
        self,
        manager: Server,
        *,
        header_timeout: float,
        on_error: Callable[[int], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._on_error = on_error
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A connection that sends nothing at all is held to the same deadline as one whose
        # headers trickle in (aiohttp would keep it for its keep-alive timeout, an hour).
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_late)

    def data_received(self, data: bytes) -> None:
        waiting_for_headers = not self._request_in_progress and not self._messages
        if data and waiting_for_headers and self._header_timer is None:
            self._header_timer = self._loop.call_later(self._header_timeout, self._headers_late)
        super().data_received(data)
        if self._header_timer is not None and (self._messages or self._request_in_progress):
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._messages or self._request_in_progress or self.transport is None:
            return
        self._on_error(408)
        message = f"the request headers did not arrive within {self._header_timeout:g}s"
        self.transport.write(_raw_response(408, "Request Timeout", message))
        self.force_close()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            # Raised before the app's middleware could answer (an Expect handler, say).
            self._on_error(resp.status)
            kept = {k: v for k, v in resp.headers.items() if k in ("Allow", "Retry-After")}
            message = (
                resp.text if resp.text and not resp.text.startswith(f"{resp.status}:") else None
            )
            resp = web.Response(
                status=resp.status,
                body=dumps({"error": message or resp.reason}),
                headers=kept,
                content_type="application/json",
            )
        return await super().finish_response(request, resp, start_time)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), RequestPayloadError | HttpProcessingError):
            self.log_debug(*args, **kwargs)  # a corrupt body left unread: the client's doing
        else:
            super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ContentEncodingError):
            status = 415
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            text = "internal error; see the server log"
        else:  # the client's fault: logging each one would let any client flood the log
            self.log_debug("Bad request from %s", request.remote, exc_info=exc)
            text = "malformed HTTP request: " + (_first_line(message) or type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was under way; it cannot turn into an error")
        self._on_error(status)
        response = web.Response(status=status, body=dumps({"error": text}))
        response.content_type = "application/json"
        response.force_close()
        return response


def _expect_only_continue(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """aiohttp's own Expect handler answers in plain text, and fails (500) on a header that is
    not UTF-8; any Expect but 100-continue is answered here, before routing."""

    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        expect = request.headers.get("Expect")
        if expect is not None and expect.strip().lower() != "100-continue":
            message = f"Expect {expect[:40]!r} is not supported; only 100-continue"
            return web.Response(
                status=417, body=dumps({"error": message}), content_type="application/json"
            )
        return await handler(request)

    return guarded


class _Server(Server):
    header_timeout: float
    on_error: Callable[[int], None]

    def __call__(self) -> RequestHandler:
        return _Protocol(
            self,
            loop=self._loop,
            header_timeout=self.header_timeout,
            on_error=self.on_error,
            **self._kwargs,
        )


class ServeRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use :class:`_Protocol`."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        on_error: Callable[[int], None] = lambda status: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._on_error = on_error

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _Server  # aiohttp builds the protocol in Server.__call__
        guarded = cast(_Server, server)
        guarded.header_timeout = self._header_timeout
        guarded.on_error = self._on_error
        guarded.request_handler = _expect_only_continue(guarded.request_handler)
        return guarded
