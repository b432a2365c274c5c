"""An exact canary split, with no service mesh: the stable servers forward the canary's share.

The ModelDeployment's Service routes to the stable pods only; each stable server sends exactly
``trafficPercent`` of its prediction requests (``/v1/predict`` and v2 ``infer``) to the canary's
own Service and relays the answer. The share is exact per server (a running count, not a coin:
20 % is every fifth request), so it is exact overall whatever the replica counts. A canary that
cannot answer (unreachable, timed out, a 5xx) costs the client nothing: the request is served
here, and counted as a fallback. Health, metadata, feedback and metrics are never forwarded
(feedback joins its prediction through the shared store, whichever track made it).

Forwarded requests are counted in ``tauon_serve_canary_forwarded_total{outcome}`` and not in
this server's own request metrics, so the stable's metrics describe what the stable served and
the canary's (its own ``/metrics``) what it served.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

__all__ = ["CanaryForwarder", "ExactShare"]

FORWARDED_HEADERS = ("Content-Type", "Inference-Header-Content-Length", "Accept")
RELAYED_HEADERS = ("Content-Type", "Inference-Header-Content-Length")


class ExactShare:
    """Says yes to exactly `percent` of calls, evenly spread (20: every fifth)."""

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.calls = 0

    def take(self) -> bool:
        self.calls += 1
        n, p = self.calls, self.percent
        return int(n * p // 100) > int((n - 1) * p // 100)


class CanaryForwarder:
    """The stable server's side of the split."""

    def __init__(self, url: str, percent: float, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.share = ExactShare(percent)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout, auto_decompress=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: web.Request, body: bytes) -> web.Response | None:
        """The canary's answer to this request, or None when it gave none worth relaying."""
        assert self._session is not None
        headers = {k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers}
        url = self.url + request.rel_url.path_qs
        try:
            async with self._session.post(url, data=body, headers=headers) as r:
                payload = await r.read()
                if r.status >= 500:
                    log.warning("canary answered %d for %s; served here", r.status, request.path)
                    return None
                relayed = {k: r.headers[k] for k in RELAYED_HEADERS if k in r.headers}
                return web.Response(status=r.status, body=payload, headers=relayed)
        except (TimeoutError, aiohttp.ClientError) as e:
            log.warning("canary at %s did not answer (%s); served here", self.url, e)
            return None


# On a forwarded request: "ok" (the canary answered) or "fallback" (served here after all).
FORWARDED = web.RequestKey("tauon_canary", str)


def middleware(
    forwarder: CanaryForwarder,
    read_body: Callable[[web.Request], Awaitable[bytes]],
    routes: frozenset[str],
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware (inside the one that counts requests) that sends the canary's
    share of `routes` to the canary; it marks each request it forwarded in `request[FORWARDED]`."""

    @web.middleware
    async def canary_split(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        if request.method != "POST" or route not in routes or not forwarder.share.take():
            return await handler(request)
        body = await read_body(request)  # served here after all, it is read from aiohttp's cache
        answer = await forwarder.forward(request, body)
        request[FORWARDED] = "ok" if answer is not None else "fallback"
        if answer is not None:
            return answer
        if request.content_type == "multipart/form-data":  # its parts were read as one body
            raise web.HTTPServiceUnavailable(
                text="the canary did not answer and this form cannot be read again; retry",
                headers={"Retry-After": "1"},
            )
        return await handler(request)

    return canary_split
