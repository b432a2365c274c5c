"""A small, thread-safe Kubernetes REST client for the node agent and the benchmarks: plain JSON
dicts, client-cert or token auth from a kubeconfig, watches as iterators. (The `kubernetes`
package would do, but its models and content-type guessing get in the way of a kubelet that
writes raw status patches.)"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import yaml


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str = "", path: str = ""):
        self.status = status
        self.body = body
        try:
            self.reason = json.loads(body).get("reason", "")
        except (ValueError, AttributeError):
            self.reason = ""
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")


def _materialize(entry: dict, key: str) -> str | None:
    """A file path for `key` (or its inline `key-data`, written to a private temp file)."""
    if entry.get(key):
        return entry[key]
    data = entry.get(f"{key}-data")
    if data:
        fd, path = tempfile.mkstemp(prefix=f"kubeapi-{key}-")
        os.write(fd, base64.b64decode(data))
        os.close(fd)
        return path
    return None


class KubeApi:
    """`keepalive`: one connection per thread, reused (a client making many requests);
    `retries`: how many times a request is tried again, with a growing pause, when the
    connection fails or the server answers 429 or 5xx."""

    def __init__(self, kubeconfig: str | Path, keepalive: bool = False, retries: int = 0,
                 timeout: float = 30):
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        url = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.server = cluster["server"]
        self.ca_file = _materialize(cluster, "certificate-authority")
        self.ctx = ssl.create_default_context(cafile=self.ca_file)
        cert = _materialize(user, "client-certificate")
        key = _materialize(user, "client-key")
        if cert and key:
            self.ctx.load_cert_chain(cert, key)
        self.token = user.get("token")
        self.keepalive, self.retries, self.timeout = keepalive, retries, timeout
        self._local = threading.local()

    def _conn(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _send(self, method: str, path: str, data: bytes | None, headers: dict,
              timeout: float) -> tuple[int, str]:
        conn = getattr(self._local, "conn", None) if self.keepalive else None
        if conn is None:
            conn = self._conn(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
        except BaseException:
            conn.close()
            self._local.conn = None
            raise
        if self.keepalive:
            self._local.conn = conn
        else:
            conn.close()
        return resp.status, raw

    def request_text(self, method: str, path: str, body=None, params: dict | None = None,
                     content_type: str = "application/json", timeout: float | None = None) -> str:
        """The response body as text; raises ApiError on an error status."""
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            try:
                status, raw = self._send(method, path, data, headers, timeout or self.timeout)
            except (OSError, http.client.HTTPException):
                if attempt == self.retries:
                    raise
            else:
                if status < 400:
                    return raw
                if attempt == self.retries or (status != 429 and status < 500):
                    raise ApiError(status, raw, method, path)
            attempt += 1
            time.sleep(0.5 * attempt)

    def request(self, method: str, path: str, body=None, params: dict | None = None,
                content_type: str = "application/json", timeout: float | None = None):
        raw = self.request_text(method, path, body, params, content_type, timeout)
        return json.loads(raw) if raw else None

    def get(self, path: str, **params):
        return self.request("GET", path, params=params or None)

    def get_text(self, path: str, **params) -> str:
        """A non-JSON resource, such as /metrics."""
        return self.request_text("GET", path, params=params or None)

    def create(self, path: str, body: dict):
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: dict):
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: dict | None = None):
        return self.request("DELETE", path, body)

    def watch(self, path: str, params: dict, timeout: float | None = 330) -> "Watch":
        """The watch events (dicts with type and object) until the server ends the watch or
        `close()` is called; `timeout` is the socket's (None: none)."""
        return Watch(self, path, {**params, "watch": "true", "allowWatchBookmarks": "true"},
                     timeout)


class Watch:
    """One watch request, iterated once: opened on the first `next()`, closed when the server
    ends it, when iteration stops, or by `close()` from another thread."""

    def __init__(self, api: KubeApi, path: str, params: dict, timeout: float | None):
        self.api, self.path, self.params, self.timeout = api, path, params, timeout
        self._conn: http.client.HTTPSConnection | None = None
        self._closed = False

    def __iter__(self):
        conn = self._conn = self.api._conn(self.timeout)
        try:
            if self._closed:
                return
            conn.request("GET", f"{self.path}?{urllib.parse.urlencode(self.params)}",
                         headers=self.api._headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "WATCH",
                               self.path)
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    def close(self) -> None:
        """Ends the watch now, even while another thread waits for its next event."""
        self._closed = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
