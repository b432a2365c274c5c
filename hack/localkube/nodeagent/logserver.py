"""The kubelet endpoint the API server calls: `kubectl logs` (/containerLogs/<ns>/<pod>/<c>,
with previous, tailLines, limitBytes and follow), /pods and /healthz, over HTTPS on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from localkube.nodeagent.common import log

if TYPE_CHECKING:
    from localkube.nodeagent.agent import NodeAgent


class KubeletHandler(http.server.BaseHTTPRequestHandler):
    agent: "NodeAgent"

    def log_message(self, fmt, *args):  # quiet
        log.debug("kubelet-api: " + fmt, *args)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            return self._text(200, b"ok")
        if len(parts) == 4 and parts[0] == "containerLogs":
            return self._logs(parts[1], parts[2], parts[3], q)
        if parts == ["pods"]:
            items = [w.pod for w in self.agent.workers_snapshot()]
            return self._text(200, json.dumps({"kind": "PodList", "apiVersion": "v1",
                                               "items": items}).encode(), "application/json")
        return self._text(404, b"not found")

    def _text(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _logs(self, ns: str, pod: str, container: str, q: dict) -> None:
        flag = lambda k: (q.get(k) or [""])[0].lower() in ("true", "1")  # noqa: E731
        worker = self.agent.worker_for(ns, pod)
        previous = flag("previous")
        path = worker.log_path(container, previous) if worker else \
            orphan_log(self.agent.pods_dir, ns, pod, container, previous)
        if path is None or not path.exists():
            return self._text(404, f"no logs for container {container} of pod {ns}/{pod}".encode())
        data = path.read_bytes()
        if q.get("tailLines"):
            n = int(q["tailLines"][0])
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        limit = int(q["limitBytes"][0]) if q.get("limitBytes") else None
        if limit is not None:
            data = data[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if not flag("follow") or previous or worker is None:
            return
        offset = path.stat().st_size
        sent = len(data)
        with open(path, "rb") as f:
            f.seek(offset)
            while True:
                chunk = f.read(65536)
                if chunk:
                    if limit is not None:
                        chunk = chunk[:max(0, limit - sent)]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += len(chunk)
                    if limit is not None and sent >= limit:
                        return
                    continue
                if worker.log_path(container) != path or self.agent.stopped.is_set() \
                        or not worker.is_alive():
                    return
                c = next((x for x in worker.containers if x.name == container), None)
                if c is None or not c.running:
                    time.sleep(0.2)
                    chunk = f.read()
                    if chunk:
                        self.wfile.write(chunk)
                    return
                time.sleep(0.2)


def serve(agent: NodeAgent) -> http.server.ThreadingHTTPServer:
    """Starts the endpoint in a thread of its own; returns the server (its port may be any)."""
    handler = type("Handler", (KubeletHandler,), {"agent": agent})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", agent.cfg.port), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(agent.cfg.serving_cert, agent.cfg.serving_key)
    if agent.cfg.client_ca:
        ctx.load_verify_locations(agent.cfg.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
    return server


def orphan_log(pods_dir: Path, ns: str, name: str, container: str, previous: bool) -> Path | None:
    """The log of a pod that has no worker (any more): its newest (or previous) attempt's."""
    for meta in pods_dir.glob("*/pod.json"):
        try:
            m = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if m["namespace"] == ns and m["name"] == name:
            logs = sorted((meta.parent / "logs" / container).glob("*.log"),
                          key=lambda p: int(p.stem))
            if len(logs) >= (2 if previous else 1):
                return logs[-2] if previous else logs[-1]
    return None
