"""The pod worker: one thread per pod that prepares its volumes and hosts file, runs its init
containers then its containers, probes them, restarts them per restartPolicy, reports its status,
and on deletion stops every process (SIGTERM, SIGKILL after the grace period) and deletes the pod
with grace 0. After an agent restart it picks up where the pod's last reported status left off.

Its concerns live in the modules of its parts: volumes, env, process, probes, podstatus, dns."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from localkube.kubeapi import ApiError
from localkube.nodeagent.common import TERMINAL, Retry, log, now_iso
from localkube.nodeagent.containers import Container
from localkube.nodeagent.dns import HostsFile
from localkube.nodeagent.env import ContainerEnv
from localkube.nodeagent.podstatus import PodStatusReport
from localkube.nodeagent.probes import ContainerProbes
from localkube.nodeagent.process import ContainerProcesses
from localkube.nodeagent.volumes import VolumeSetup, safe_rmtree

if TYPE_CHECKING:
    from localkube.nodeagent.agent import NodeAgent


class PodWorker(VolumeSetup, ContainerEnv, ContainerProcesses, ContainerProbes, PodStatusReport,
                HostsFile, threading.Thread):
    def __init__(self, agent: "NodeAgent", pod: dict):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent, self.api = agent, agent.api
        self.pod = pod
        self.uid, self.ns, self.pod_name = meta["uid"], meta["namespace"], meta["name"]
        self.dir = agent.pods_dir / self.uid
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.deleting: float | None = None  # grace seconds once a deletionTimestamp is seen
        self.gone = False                    # the pod object no longer exists
        self.stopping = False                # the agent is stopping
        self.ip = ""
        self.start_time = ""
        self.volumes: dict[str, dict] = {}
        self.token_refresh: list[tuple[float, dict, Path]] = []
        self.init_done = False
        self.init_failed = False
        self.containers: list[Container] = []
        self.last_status: dict | None = None
        self.cond_times: dict[str, tuple[str, str]] = {}
        self.hosts_text = ""
        self.hosts_lock = threading.Lock()
        self.env_cache: dict[str, dict] = {}
        self.problem: tuple[str, str] | None = None

    # -------------------------------------------------------------- events from the agent
    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp") and self.deleting is None:
                self.deleting = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        self.wake.set()

    def vanish(self) -> None:
        self.gone = True
        self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    # -------------------------------------------------------------- main loop
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - a broken pod must not take the agent down
            log.exception("pod %s/%s: worker failed", self.ns, self.pod_name)
            self._kill_all(0)
        finally:
            self.agent.ips.release(self.uid)
            self.agent.forget(self)

    def _run(self) -> None:
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        for c in spec.get("initContainers") or []:
            sidecar = c.get("restartPolicy") == "Always"
            self.containers.append(Container(c, init=not sidecar,
                                             restart_policy="Always" if sidecar else policy))
        self.containers += [Container(c, restart_policy=policy) for c in spec["containers"]]
        self._restore()
        self.ip = self.agent.ips.allocate(self.uid, self.pod.get("status", {}).get("podIP"))
        self.start_time = self.pod.get("status", {}).get("startTime") or now_iso()
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.dir / "pod.json").write_text(json.dumps(
            {"namespace": self.ns, "name": self.pod_name, "uid": self.uid}))
        self.publish()

        prepared = False
        while True:
            if self.stopping:
                self._kill_all(2)
                return
            if self.gone:
                self._kill_all(0)
                self._cleanup()
                return
            if self.deleting is not None:
                self._kill_all(self.deleting)
                self._finish_deletion()
                return
            if not prepared and not self._terminal():
                try:
                    self._prepare_volumes()
                    self.refresh_hosts(self.agent.dns_snapshot(force=True))
                    prepared = True
                    self.problem = None
                except Retry as e:
                    self.problem = (e.reason, str(e))
                except ApiError as e:
                    self.problem = ("ContainerCreating", str(e)[:300])
                except Exception as e:  # noqa: BLE001
                    log.exception("pod %s/%s: volumes", self.ns, self.pod_name)
                    self.problem = ("CreateContainerConfigError", str(e)[:300])
            if prepared:
                self._step()
            self.publish()
            if self._terminal():
                self.agent.ips.release(self.uid)
            self.wake.wait(0.2 if prepared and not self._terminal() else 1.0)
            self.wake.clear()

    def _terminal(self) -> bool:
        return self._phase() in TERMINAL

    def _step(self) -> None:
        now = time.time()
        self._refresh_tokens(now)
        inits = [c for c in self.containers if c.init]
        for c in self.containers:
            if c.running and c.proc.poll() is not None:
                self._on_exit(c)
        if not self.init_done:
            pending = [c for c in inits if not (c.done and c.state.get("terminated", {}).get("exitCode") == 0)]
            if any(c.done for c in pending):
                self.init_failed = True
                return
            if pending:
                c = pending[0]
                if not c.running and now >= c.backoff_until:
                    self._start(c)
                return
            self.init_done = True
        for c in self.containers:
            if c.init:
                continue
            if not c.running and not c.done and now >= c.backoff_until:
                self._start(c)
            if c.running:
                self._probe(c, now)

    # -------------------------------------------------------------- restore after agent restart
    def _restore(self) -> None:
        status = self.pod.get("status", {})
        known = {s["name"]: s for s in (status.get("initContainerStatuses") or [])
                 + (status.get("containerStatuses") or [])}
        for c in self.containers:
            s = known.get(c.name)
            if not s:
                continue
            c.restart_count = s.get("restartCount", 0)
            ran = "running" in s.get("state", {}) or "terminated" in s.get("state", {}) \
                or "terminated" in (s.get("lastState") or {})
            c.attempts = c.restart_count + 1 if ran else 0
            state = s.get("state", {})
            if "running" in state:
                # Its process died with the previous agent (or was killed as a leftover).
                term = {"exitCode": 137, "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the node agent restarted",
                        "startedAt": state["running"].get("startedAt"), "finishedAt": now_iso()}
                self._after_exit(c, term, 137)
            elif "terminated" in state:
                c.state = {"terminated": state["terminated"]}
                c.last_state = s.get("lastState") or {}
                rc = state["terminated"].get("exitCode", 0)
                c.done = not self._restartable(c, rc)
        if all(c.done and c.state.get("terminated", {}).get("exitCode") == 0
               for c in self.containers if c.init):
            self.init_done = True

    def _finish_deletion(self) -> None:
        self.publish()
        try:
            self.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}",
                            {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: delete: %s", self.ns, self.pod_name, e)
        self._cleanup()

    def _cleanup(self) -> None:
        safe_rmtree(self.dir)
