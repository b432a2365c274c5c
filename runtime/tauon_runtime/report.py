"""Progress reporting: JSON lines on stdout, and (optionally) the owning resource's status.

Every event is one JSON object on one stdout line (`{"event": "epoch", ...}`), so `kubectl logs`
and log pipelines read the same thing. When env TAUON_STATUS_TARGET names the custom resource
(`<group>/<version>/namespaces/<ns>/<plural>/<name>`), the same events become merge patches of
its status subresource, sent with the pod's service-account token using only the standard
library (the runtime carries no Kubernetes client), from a background thread so that a slow API
server never slows a training step. Status updates are best effort: a failure is logged and
training goes on.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tauon_runtime.contract.keys import ENV_SERVICEACCOUNT_DIR as ENV_SA_DIR
from tauon_runtime.contract.keys import ENV_STATUS_API_URL as ENV_API_URL
from tauon_runtime.contract.keys import ENV_STATUS_TARGET as ENV_TARGET
from tauon_runtime.contract.keys import ENV_TERMINATION_LOG

DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TERMINATION_LOG_LIMIT = 4096  # what the kubelet keeps of a termination message


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge of `patch` into a copy of `base` (None deletes, dicts merge)."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def compose(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """One merge patch that does what sending `first` and then `then` does.

    Unlike `merge`, a None (delete) survives: it is an instruction for the server, not a value.
    """
    out = dict(first)
    for key, value in then.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = compose(out[key], value)
        elif isinstance(value, dict) and key in out:  # `first` set a non-object here: start afresh
            out[key] = merge({}, value)
        else:
            out[key] = value
    return out


class StatusReporter:
    """Merge-patches one custom resource's status subresource, from a background thread.

    `patch()` never waits on the network: it composes the body into a latest-value slot (so a
    field of an earlier patch still waiting there is kept) and returns. A daemon thread sends
    what the slot holds, at most every `interval` seconds; patches arriving while a request is
    on the wire coalesce into the next one. `final=True` asks for the next send at once, and
    `flush()` / `close()` wait, bounded, until everything patched so far has been sent: the last
    state lands although no training step ever waits for the API server.
    """

    def __init__(
        self,
        target: str,
        api_url: str,
        token_path: Path | None = None,
        ca_path: Path | None = None,
        interval: float = 2.0,
        timeout: float = 5.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        parts = target.strip("/").split("/")
        if len(parts) != 6 or parts[2] != "namespaces":
            raise ValueError(
                f"{ENV_TARGET} must be <group>/<version>/namespaces/<ns>/<plural>/<name>, got {target!r}"
            )
        group, version, _, ns, plural, name = parts
        self.url = (
            f"{api_url.rstrip('/')}/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/status"
        )
        self.token_path, self.ca_path = token_path, ca_path
        self.interval, self.timeout = interval, timeout
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._pending: dict[str, Any] = {}  # the latest-value slot
        self._urgent = False  # send the slot without waiting out the interval
        self._sending = False  # a request is on the wire
        self._closing = False  # the thread ends once the slot is empty
        self._last_sent = float("-inf")
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None  # started by the first patch
        self.sent = 0
        self.failures = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StatusReporter | None:
        env = dict(os.environ if env is None else env)
        target = env.get(ENV_TARGET)
        if not target:
            return None
        sa_dir = Path(env.get(ENV_SA_DIR, DEFAULT_SA_DIR))
        api_url = env.get(ENV_API_URL)
        if not api_url:
            host, port = (
                env.get("KUBERNETES_SERVICE_HOST"),
                env.get("KUBERNETES_SERVICE_PORT", "443"),
            )
            if not host:
                print(
                    f"{ENV_TARGET} set but KUBERNETES_SERVICE_HOST is not; status not reported",
                    file=sys.stderr,
                )
                return None
            api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(target, api_url, token_path=sa_dir / "token", ca_path=sa_dir / "ca.crt")

    def patch(self, body: dict[str, Any], final: bool = False) -> None:
        """Queue `body` (composed with what is waiting); returns at once."""
        with self._wake:
            self._pending = compose(self._pending, body)
            self._urgent = self._urgent or final
            self._closing = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tauon-status", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is waiting now; wait until it is sent (or failed). False: `timeout` ran out."""
        with self._wake:
            if self._pending:
                self._urgent = True
                self._wake.notify_all()
            return self._wake.wait_for(lambda: not self._pending and not self._sending, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, waiting at most `timeout` seconds (default: two request timeouts, enough for
        the request on the wire and the final one), then let the thread end."""
        limit = 2 * self.timeout if timeout is None else timeout
        done = self.flush(limit)
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if not done:
            self._log(f"status patch to {self.url} not sent within {limit:g}s; giving up")
        return done

    def _run(self) -> None:
        while body := self._next():
            try:
                self._send(body)
            except Exception as e:  # best effort: the thread must outlive any one patch
                self.failures += 1
                self._log(f"status patch to {self.url} failed: {type(e).__name__}: {e}")
            finally:
                with self._wake:
                    self._sending = False
                    self._wake.notify_all()

    def _next(self) -> dict[str, Any] | None:
        """Wait until the slot is due and take it; None when closing with nothing left."""
        with self._wake:
            while True:
                if not self._pending:
                    if self._closing:
                        self._thread = None  # under the lock: a later patch starts a new thread
                        return None
                    self._wake.wait()
                    continue
                due = (
                    0.0
                    if self._urgent or self._closing
                    else self._last_sent + self.interval - time.monotonic()
                )
                if due <= 0:
                    break
                self._wake.wait(due)
            body, self._pending, self._urgent = self._pending, {}, False
            self._sending, self._last_sent = True, time.monotonic()
            return body

    def _send(self, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        if self.token_path and self.token_path.exists():
            # Re-read every time: projected service-account tokens rotate.
            headers["Authorization"] = f"Bearer {self.token_path.read_text().strip()}"
        context = None
        if self.url.startswith("https:"):
            cafile = str(self.ca_path) if self.ca_path and self.ca_path.exists() else None
            context = ssl.create_default_context(cafile=cafile)
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="PATCH"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as resp:
                resp.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.failures += 1
            detail = (
                e.read().decode(errors="replace")[:300]
                if isinstance(e, urllib.error.HTTPError)
                else ""
            )
            self._log(f"status patch to {self.url} failed: {e} {detail}".rstrip())


def write_termination_log(result: dict[str, Any], path: str | None = None) -> None:
    """Write the final result where the kubelet reads a container's termination message."""
    path = path or os.environ.get(ENV_TERMINATION_LOG)
    if not path:
        return
    text = json.dumps(result, separators=(",", ":"), default=str)
    if len(text) > TERMINATION_LOG_LIMIT:  # keep it valid JSON rather than cut mid-string
        text = json.dumps(
            {k: result[k] for k in ("event", "result", "error", "message") if k in result}
        )
    try:
        Path(path).write_text(text[:TERMINATION_LOG_LIMIT])
    except OSError as e:
        print(f"cannot write termination log {path}: {e}", file=sys.stderr)


class Reporter:
    """Emits events as JSON lines and turns them into status patches. Rank 0 only.

    `status_for(event, fields)` maps an event to a status patch (None: nothing to patch); the
    training and prepare commands supply their own.
    """

    FINAL_EVENTS = frozenset({"finished", "exported", "error"})

    def __init__(
        self,
        enabled: bool = True,
        stream: TextIO | None = None,
        status: StatusReporter | None = None,
        status_for: Callable[[str, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream
        self.status = status if enabled else None
        self.status_for = status_for

    def event(self, event: str, /, **fields: Any) -> dict[str, Any]:
        """One JSON line `{"event": ..., "time": ..., **fields}` (a field may be called
        `name`: the event is positional only)."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if not self.enabled:
            return record
        print(json.dumps(record, default=str), file=self.stream or sys.stdout, flush=True)
        self.to_status(event, fields, final=event in self.FINAL_EVENTS)
        return record

    def to_status(self, name: str, fields: dict[str, Any], final: bool = False) -> None:
        """Status only, no log line: used for frequent progress updates inside an epoch."""
        if self.status and self.status_for:
            body = self.status_for(name, fields)
            if body:
                self.status.patch(body, final=final)

    def close(self) -> None:
        """Wait (bounded) until the last status patch has been sent."""
        if self.status:
            self.status.close()
