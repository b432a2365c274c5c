"""What every part of the node agent shares: its logger, the terminal phases, time stamps in the
API's formats and `Retry`, the signal that a pod cannot start yet."""

from __future__ import annotations

import datetime as dt
import logging

log = logging.getLogger("localkube.nodeagent")

TERMINAL = ("Succeeded", "Failed")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Retry(Exception):
    """A pod cannot start yet (a ConfigMap, a PVC binding...): try again shortly."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
