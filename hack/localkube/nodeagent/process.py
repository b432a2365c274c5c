"""Container processes: started through `podexec.py` (a private mount + UTS namespace in which
volumes appear at their mountPaths, /etc/hosts is the pod's own and the hostname the pod's),
logged per attempt, restarted per restartPolicy with back-off, stopped with SIGTERM and, after
the grace period, SIGKILL to the whole process group.

`ContainerProcesses` is a part of PodWorker: it needs self.pod, self.dir, self.volumes,
self.deleting, self.stopping, self.agent (cfg, spawner, event) and self._env (env.py)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from localkube.nodeagent.common import Retry, log, ts
from localkube.nodeagent.containers import Container, Probe
from localkube.nodeagent.dns import pod_hostname
from localkube.nodeagent.env import expand
from localkube.procutil import signal_group, terminate

PODEXEC = Path(__file__).resolve().parent.parent / "podexec.py"
MAX_MESSAGE = 4096


def proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Spawner:
    """Starts processes from one long-lived thread: PR_SET_PDEATHSIG fires when the thread
    that forked the child exits, so it must not be a pod worker's."""

    def __init__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spawner")

    def spawn(self, argv: list[str], log_file: Path) -> subprocess.Popen:
        def go():
            with open(log_file, "ab") as out:
                return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                        close_fds=True)
        return self._pool.submit(go).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)


def kill_leftovers(pods_dir: Path) -> None:
    """Processes recorded by a previous agent that are still alive are killed (group)."""
    for pidfile in pods_dir.glob("*/containers/*/pid"):
        try:
            pid_s, _, start = pidfile.read_text().partition(" ")
            pid = int(pid_s)
            if start.strip() and proc_start_time(pid) == start.strip():
                log.info("killing leftover process group %d (%s)", pid, pidfile.parent)
                os.killpg(pid, signal.SIGKILL)
        except (ValueError, OSError):
            pass
        try:
            pidfile.unlink()
        except OSError:
            pass


class ContainerProcesses:
    def _cdir(self, c: Container) -> Path:
        return self.dir / "containers" / c.name

    def log_path(self, name: str, previous: bool = False) -> Path | None:
        c = next((x for x in self.containers if x.name == name), None)
        if c is None:
            return None
        n = c.attempts - (1 if previous else 0)
        return self.dir / "logs" / name / f"{n}.log" if n >= 1 else None

    def _start(self, c: Container) -> None:
        try:
            env = self._env(c.spec)
        except Retry as e:
            c.state = {"waiting": {"reason": e.reason, "message": str(e)}}
            c.backoff_until = time.time() + 1
            return
        argv = [expand(a, env) for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])]
        if not argv:
            image = c.spec.get("image", "")
            if "pause" in image.rsplit("/", 1)[-1]:
                argv = ["sleep", "infinity"]
            else:
                c.state = {"waiting": {"reason": "CreateContainerError", "message":
                                       "the local node agent runs no images: give the container a command"}}
                c.backoff_until = time.time() + 5
                return
        cdir = self._cdir(c)
        cdir.mkdir(parents=True, exist_ok=True)
        term = cdir / "termination-log"
        term.write_bytes(b"")
        mounts = []
        for vm in c.spec.get("volumeMounts") or []:
            vol = self.volumes.get(vm["name"])
            if vol is None:
                c.state = {"waiting": {"reason": "CreateContainerConfigError",
                                       "message": f"volume {vm['name']} not found"}}
                c.done = True
                return
            src = Path(vol["path"])
            sub = vm.get("subPath") or (expand(vm["subPathExpr"], env) if vm.get("subPathExpr") else "")
            if sub:
                src = src / sub
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            mounts.append({"source": str(src), "target": vm["mountPath"],
                           "readOnly": bool(vm.get("readOnly") or vol["readOnly"])})
        for path in self.agent.cfg.image_paths:
            mounts.append({"source": os.path.realpath(path), "target": path, "readOnly": True})
        mounts.append({"source": str(self.dir / "hosts"), "target": "/etc/hosts", "readOnly": False})
        mounts.append({"source": str(term), "target": c.spec.get("terminationMessagePath")
                       or "/dev/termination-log", "readOnly": False})
        root = cdir / "rootfs"
        root.mkdir(exist_ok=True)
        plan = {"root": str(root), "hostname": pod_hostname(self.pod), "argv": argv, "env": env,
                "workingDir": c.spec.get("workingDir"), "mounts": mounts, "parentPid": os.getpid()}
        plan_file = cdir / "plan.json"
        plan_file.write_text(json.dumps(plan))
        plan_file.chmod(0o600)
        c.attempts += 1
        c.restart_count = max(c.restart_count, c.attempts - 1)  # every start after the first
        log_file = self.dir / "logs" / c.name / f"{c.attempts}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        c.proc = self.agent.spawner.spawn([sys.executable, "-S", str(PODEXEC), str(plan_file)], log_file)
        (cdir / "pid").write_text(f"{c.proc.pid} {proc_start_time(c.proc.pid) or ''}")
        c.started_at = time.time()
        c.kill_reason = ""
        c.state = {"running": {"startedAt": ts(c.started_at)}}
        c.started = "startupProbe" not in c.spec
        c.ready = False
        c.probes = {k: Probe(k, c.spec[p]) for k, p in
                    (("startup", "startupProbe"), ("liveness", "livenessProbe"),
                     ("readiness", "readinessProbe")) if c.spec.get(p)}
        for p in c.probes.values():
            p.next_at = c.started_at + p.spec.get("initialDelaySeconds", 0)
        if "readiness" not in c.probes:
            c.ready = c.started
        self.agent.event(self.pod, "Started", f"Started container {c.name}")

    def _restartable(self, c: Container, rc: int) -> bool:
        if c.restart_policy == "Always" and not c.init:
            return True
        return c.restart_policy in ("Always", "OnFailure") and rc != 0

    def _on_exit(self, c: Container) -> None:
        rc = c.proc.returncode
        rc = 128 - rc if rc < 0 else rc
        finished = time.time()
        msg = self._termination_message(c, rc)
        reason = "Completed" if rc == 0 else "Error"
        term = {"exitCode": rc, "reason": reason, "startedAt": ts(c.started_at),
                "finishedAt": ts(finished), "containerID": f"local://{c.proc.pid}"}
        if msg:
            term["message"] = msg
        try:
            (self._cdir(c) / "pid").unlink()
        except OSError:
            pass
        c.proc = None
        if finished - c.started_at > 2 * self.agent.cfg.backoff_max:
            c.backoff = 0.0
        self._after_exit(c, term, rc)

    def _after_exit(self, c: Container, term: dict, rc: int) -> None:
        c.ready = False
        c.probes = {}
        if self.deleting is None and not self.stopping and self._restartable(c, rc):
            c.last_state = {"terminated": term}
            c.backoff = min(self.agent.cfg.backoff_max,
                            (c.backoff * 2) if c.backoff else self.agent.cfg.backoff_base)
            c.backoff_until = time.time() + c.backoff
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                   f"back-off {c.backoff:g}s restarting failed container={c.name} "
                                   f"pod={self.pod_name}_{self.ns}({self.uid})"}}
            self.agent.event(self.pod, "BackOff", f"Back-off restarting container {c.name}",
                             "Warning")
        else:
            c.state = {"terminated": term}
            c.done = True

    def _termination_message(self, c: Container, rc: int) -> str:
        try:
            data = (self._cdir(c) / "termination-log").read_bytes()[-MAX_MESSAGE:]
        except OSError:
            data = b""
        if not data.strip() and rc != 0 and \
                c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lp = self.log_path(c.name)
            try:
                lines = lp.read_bytes().splitlines(keepends=True)[-80:]
                data = b"".join(lines)[-2048:]
            except (OSError, AttributeError):
                data = b""
        return data.decode(errors="replace")

    def _signal(self, c: Container, sig: int) -> None:
        if c.proc is not None:
            signal_group(c.proc.pid, sig)

    def _kill_all(self, grace: float) -> None:
        running = [c for c in self.containers if c.running]
        terminate([c.proc for c in running], grace)  # SIGKILL to the whole group: children too
        for c in running:
            if c.proc.returncode is not None:
                self._on_exit(c)
