"""What the operator reads from the serving pods themselves (their HTTP endpoints on the pod IP):
the feedback counts of a ModelDeployment. The chart's NetworkPolicy lets the operator reach the
serving port and nothing else of those pods."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

TIMEOUT_S = 3.0


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
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for pod in sorted(filter(_ready, pods), key=lambda p: p["metadata"]["name"]):
            ip = pod["status"]["podIP"]
            url = f"http://{f'[{ip}]' if ':' in ip else ip}:{port}/v1/feedback/stats"
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        body = await r.json()
                        if isinstance(body, dict) and isinstance(body.get("total"), int):
                            return body
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                log.debug("feedback stats from %s: %s", url, e)
    return None
