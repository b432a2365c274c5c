"""What the operator reads from the serving pods themselves (their HTTP endpoints on the pod IP):
the feedback counts of a ModelDeployment, and the canary share its stable servers forwarded
(their /metrics). The chart's NetworkPolicy lets the operator reach the serving port and nothing
else of those pods."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# A pod that does not answer (not listening yet, or a NetworkPolicy drops the packets) costs a
# reconcile at most this long.
TIMEOUT = aiohttp.ClientTimeout(total=3.0, sock_connect=1.0)


PREDICTION_ROUTES = frozenset(
    {
        "/v1/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
)


def _url(pod: dict[str, Any], port: int, path: str) -> str:
    ip = pod["status"]["podIP"]
    return f"http://{f'[{ip}]' if ':' in ip else ip}:{port}{path}"


def _ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return (
        bool(st.get("podIP"))
        and not pod["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
    )


async def feedback_stats(pods: list[dict[str, Any]], port: int) -> dict[str, Any] | None:
    """`/v1/feedback/stats` of the first ready serving pod that answers; None when none does.
    With feedback in the artifact store every replica counts every replica's records."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for pod in sorted(filter(_ready, pods), key=lambda p: p["metadata"]["name"]):
            url = _url(pod, port, "/v1/feedback/stats")
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        body = await r.json()
                        if isinstance(body, dict) and isinstance(body.get("total"), int):
                            return body
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                log.debug("feedback stats from %s: %s", url, e)
    return None


def split_counts(text: str) -> tuple[float, float]:
    """(forwarded to the canary and answered there, served here) prediction requests, from one
    stable server's /metrics."""
    forwarded = served = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "tauon_serve_canary_forwarded_total"
                and labels.get("outcome") == "ok"
            ):
                forwarded += sample.value
            elif (
                sample.name == "tauon_serve_requests_total"
                and labels.get("route") in PREDICTION_ROUTES
            ):
                served += sample.value
    return forwarded, served


def prediction_metrics(text: str) -> dict[str, Any]:
    """One server's prediction traffic from its /metrics: requests answered here, of them
    failed (5xx), the request-latency histogram (upper bound -> cumulative count), and
    requests forwarded to the canary that it did not answer (fallback)."""
    out: dict[str, Any] = {"requests": 0.0, "errors": 0.0, "fallback": 0.0, "latency": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "tauon_serve_requests_total":
                if labels.get("route") in PREDICTION_ROUTES:
                    out["requests"] += sample.value
                    if str(labels.get("code", "")).startswith("5"):
                        out["errors"] += sample.value
            elif (
                sample.name == "tauon_serve_request_duration_seconds_bucket"
                and labels.get("route") in PREDICTION_ROUTES
            ):
                le = float(labels["le"])
                out["latency"][le] = out["latency"].get(le, 0.0) + sample.value
            elif (
                sample.name == "tauon_serve_canary_forwarded_total"
                and labels.get("outcome") == "fallback"
            ):
                out["fallback"] += sample.value
    return out


def summed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """prediction_metrics of several servers of one track, added up."""
    out: dict[str, Any] = {"requests": 0.0, "errors": 0.0, "fallback": 0.0, "latency": {}}
    for p in parts:
        for k in ("requests", "errors", "fallback"):
            out[k] += p[k]
        for le, n in p["latency"].items():
            out["latency"][le] = out["latency"].get(le, 0.0) + n
    return out


async def track_metrics(pods: list[dict[str, Any]], port: int) -> dict[str, Any] | None:
    """prediction_metrics summed over every ready pod of one track that answers; None when
    none does."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

        async def one(pod: dict[str, Any]) -> dict[str, Any] | None:
            try:
                async with session.get(_url(pod, port, "/metrics")) as r:
                    return prediction_metrics(await r.text()) if r.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.debug("metrics of %s: %s", pod["metadata"]["name"], e)
                return None

        answers = [a for a in await asyncio.gather(*map(one, filter(_ready, pods))) if a]
    return summed(answers) if answers else None


async def canary_share(stable_pods: list[dict[str, Any]], port: int) -> tuple[float, int] | None:
    """(percent of prediction requests the canary answered, requests counted) over every ready
    stable server that answers, since each started; None when none answers or none counted."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

        async def counts(pod: dict[str, Any]) -> tuple[float, float] | None:
            try:
                async with session.get(_url(pod, port, "/metrics")) as r:
                    return split_counts(await r.text()) if r.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.debug("metrics of %s: %s", pod["metadata"]["name"], e)
                return None

        answers = [a for a in await asyncio.gather(*map(counts, filter(_ready, stable_pods))) if a]
    forwarded = sum(f for f, _ in answers)
    total = forwarded + sum(s for _, s in answers)
    if not total:
        return None
    return round(100 * forwarded / total, 2), int(total)
