"""A small, thread-safe Kubernetes REST client for the node agent: plain JSON dicts, client-cert
auth from a kubeconfig, watches as generators. (The `kubernetes` package would do, but its
models and content-type guessing get in the way of a kubelet that writes raw status patches.)"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
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
    def __init__(self, kubeconfig: str | Path):
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

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body=None, params: dict | None = None,
                content_type: str = "application/json", timeout: float = 30):
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = self._conn(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status >= 400:
            raise ApiError(resp.status, raw, method, path)
        return json.loads(raw) if raw else None

    def get(self, path: str, **params):
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: dict):
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: dict):
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: dict | None = None):
        return self.request("DELETE", path, body)

    def watch(self, path: str, params: dict, timeout: float = 330):
        """Yields watch events (dicts with type and object) until the server ends the watch."""
        params = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        conn = self._conn(timeout)
        try:
            headers = {"Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            conn.request("GET", f"{path}?{urllib.parse.urlencode(params)}", headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "WATCH", path)
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
