"""Local processes and ports, shared by the control plane, the node agent, tests and benchmarks:
a free port, waiting until a URL answers, and stopping processes with a grace period."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

_GIVEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def claim(name: str) -> bool:
    """Claims `name` (a port, a block of pod addresses) for this process in a machine-wide
    registry: a file per name holding the claimer's pid, under a lock. False when another live
    process holds it. Two test workers (or a demo beside a test run) each start clusters: a
    port one of them chose but has not bound yet looks free to the other, and then a component
    answers for another cluster (an etcd /health, a SeaweedFS /metrics) while its own failed
    to bind."""
    import fcntl
    import tempfile

    registry = Path(tempfile.gettempdir()) / "localkube-claims"
    registry.mkdir(exist_ok=True)
    with open(registry / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = registry / name
        try:
            holder = int(held.read_text() or 0)
        except (OSError, ValueError):
            holder = 0
        if holder and holder != os.getpid() and alive(holder):
            return False
        held.write_text(str(os.getpid()))
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral
    range: a port from that range (what binding port 0 gives) can be taken by any outgoing
    connection between this call and the server's own bind — a component then fails with
    "address already in use". Never the same port twice in one process, nor one another live
    process on this machine was given (see claim)."""
    high = _ephemeral_low() - 1
    for _ in range(500):
        port = random.randint(10000, high)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not claim(f"port-{port}"):
            continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    """Whether `url` answers 200 now (an error or another status is a no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for_url(url: str, timeout: float, proc: subprocess.Popen | None = None,
                 ctx: ssl.SSLContext | None = None, interval: float = 0.1) -> None:
    """Polls until `url` answers 200. Raises ChildProcessError if `proc` exits first and
    TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url, ctx):
            return
        if proc is not None and proc.poll() is not None:
            raise ChildProcessError(f"exited with {proc.returncode} before {url} answered")
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g}s")


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def signal_group(pid: int, sig: int) -> bool:
    """Sends `sig` to the process group `pid` leads; False if there is none (or not ours)."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def terminate(procs: Iterable[subprocess.Popen | int], grace: float, group: bool = True,
              reap: float = 5.0) -> None:
    """SIGTERM, up to `grace` seconds to exit, then SIGKILL. `procs` are Popen objects or pids;
    with `group` each gets the signals as a process group (its children too: the SIGKILL goes
    to the group even when its leader has exited). Popen objects are then reaped for up to
    `reap` seconds."""
    procs = list(procs)
    for p in procs:
        _signal(p, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(p) for p in procs):
        time.sleep(0.05)
    for p in procs:
        _signal(p, signal.SIGKILL, group)
    for p in procs:
        if isinstance(p, subprocess.Popen):
            try:
                p.wait(timeout=reap)
            except subprocess.TimeoutExpired:
                pass


def _pid(p: subprocess.Popen | int) -> int:
    return p.pid if isinstance(p, subprocess.Popen) else p


def _signal(p: subprocess.Popen | int, sig: int, group: bool) -> None:
    if group:
        signal_group(_pid(p), sig)
    elif isinstance(p, subprocess.Popen):
        if p.poll() is None:
            p.send_signal(sig)
    else:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _running(p: subprocess.Popen | int) -> bool:
    if isinstance(p, subprocess.Popen):
        return p.poll() is None
    try:  # reaps it if it is our child
        os.waitpid(p, os.WNOHANG)
    except ChildProcessError:
        pass
    return alive(p)
