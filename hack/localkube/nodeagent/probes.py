"""Startup, liveness and readiness probes (httpGet, tcpSocket, exec in the container's
namespaces): readiness sets a container's `ready`, a failed startup or liveness probe restarts it.

`ContainerProbes` is a part of PodWorker: it needs self.pod, self.ip, self.agent.event,
self._env (env.py) and self._on_exit (process.py)."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess

from localkube.nodeagent.containers import Container
from localkube.procutil import terminate


class ContainerProbes:
    def _probe(self, c: Container, now: float) -> None:
        for kind in ("startup", "liveness", "readiness"):
            p = c.probes.get(kind)
            if p is None or now < p.next_at:
                continue
            if kind != "startup" and not c.started:
                continue
            if kind == "startup" and c.started:
                continue
            p.next_at = now + p.spec.get("periodSeconds", 10)
            ok = self._run_probe(c, p.spec)
            if ok:
                p.successes, p.failures = p.successes + 1, 0
                if p.successes >= (p.spec.get("successThreshold", 1) if kind == "readiness" else 1):
                    p.ok = True
            else:
                p.failures, p.successes = p.failures + 1, 0
                if p.failures >= p.spec.get("failureThreshold", 3):
                    p.ok = False
            if kind == "startup" and p.ok:
                c.started = True
                if "readiness" not in c.probes:
                    c.ready = True
            elif kind == "readiness" and p.ok is not None:
                c.ready = p.ok
            elif kind in ("startup", "liveness") and p.ok is False:
                self.agent.event(self.pod, "Unhealthy",
                                 f"{kind.capitalize()} probe failed; container {c.name} will be restarted",
                                 "Warning")
                c.kill_reason = kind
                grace = p.spec.get("terminationGracePeriodSeconds") or \
                    self.pod["spec"].get("terminationGracePeriodSeconds", 30)
                terminate([c.proc], grace)
                c.proc.wait()
                self._on_exit(c)
                return

    def _port(self, c: Container, port) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown port {port}")

    def _run_probe(self, c: Container, spec: dict) -> bool:
        timeout = spec.get("timeoutSeconds", 1)
        try:
            if "httpGet" in spec:
                h = spec["httpGet"]
                host = h.get("host") or self.ip
                port = self._port(c, h["port"])
                cls = http.client.HTTPSConnection if h.get("scheme") == "HTTPS" else http.client.HTTPConnection
                kw = {"context": ssl._create_unverified_context()} if cls is http.client.HTTPSConnection else {}
                conn = cls(host, port, timeout=timeout, **kw)
                try:
                    headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                    headers.setdefault("User-Agent", "kube-probe/local")
                    conn.request("GET", h.get("path") or "/", headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "tcpSocket" in spec:
                t = spec["tcpSocket"]
                with socket.create_connection((t.get("host") or self.ip, self._port(c, t["port"])),
                                              timeout=timeout):
                    return True
            if "exec" in spec:
                cmd = spec["exec"]["command"]
                env = self._env(c.spec)
                res = subprocess.run(["nsenter", "-t", str(c.proc.pid), "-m", "-u", "-r", "-w",
                                      "--", *cmd], env=env, capture_output=True,
                                     timeout=timeout)
                return res.returncode == 0
            return True  # grpc probes: not supported, counted as passing
        except Exception:  # noqa: BLE001 - any error is a failed probe
            return False
