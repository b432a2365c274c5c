"""A pod's status as kubelet reports it: phase, conditions (their transition times kept),
container statuses, written with a merge patch only when it changed.

`PodStatusReport` is a part of PodWorker: it needs self.pod, self.containers, self.init_done,
self.init_failed, self.problem, self.ip, self.start_time and self.api."""

from __future__ import annotations

from localkube.kubeapi import ApiError
from localkube.nodeagent.common import TERMINAL, log, now_iso
from localkube.nodeagent.containers import Container


class PodStatusReport:
    def _phase(self) -> str:
        if self.init_failed:
            return "Failed"
        mains = [c for c in self.containers if not c.init]
        if not self.init_done:
            return "Pending"
        if all(c.done for c in mains):
            ok = all(c.state.get("terminated", {}).get("exitCode") == 0 for c in mains)
            return "Succeeded" if ok else "Failed"
        if any(c.running or c.attempts for c in mains):
            return "Running"
        return "Pending"

    def _cstatus(self, c: Container) -> dict:
        state = c.state
        if self.problem and not c.attempts and "waiting" in state:
            state = {"waiting": {"reason": self.problem[0], "message": self.problem[1]}}
        s = {"name": c.name, "image": c.spec.get("image", ""),
             "imageID": f"local://{c.spec.get('image', '')}", "ready": c.ready,
             "restartCount": c.restart_count, "started": c.running and c.started,
             "state": state, "lastState": c.last_state}
        if c.proc is not None:
            s["containerID"] = f"local://{c.proc.pid}"
        elif "terminated" in state and state["terminated"].get("containerID"):
            s["containerID"] = state["terminated"]["containerID"]
        return s

    def _condition(self, ctype: str, ok: bool, reason: str = "") -> dict:
        status = "True" if ok else "False"
        prev = self.cond_times.get(ctype)
        if not prev or prev[0] != status:
            self.cond_times[ctype] = (status, now_iso())
        c = {"type": ctype, "status": status, "lastProbeTime": None,
             "lastTransitionTime": self.cond_times[ctype][1]}
        if reason and not ok:
            c["reason"] = reason
        return c

    def status(self) -> dict:
        phase = self._phase()
        mains = [c for c in self.containers if not c.init]
        containers_ready = all(c.ready for c in mains)
        gates = [g["conditionType"] for g in self.pod["spec"].get("readinessGates") or []]
        existing = {c["type"]: c for c in self.pod.get("status", {}).get("conditions") or []}
        gates_ok = all(existing.get(g, {}).get("status") == "True" for g in gates)
        not_ready_reason = "PodCompleted" if phase in TERMINAL else "ContainersNotReady"
        ours = [
            self._condition("PodReadyToStartContainers", True),
            self._condition("Initialized", self.init_done,
                            "PodCompleted" if phase in TERMINAL else "ContainersNotInitialized"),
            self._condition("Ready", containers_ready and gates_ok and phase == "Running",
                            not_ready_reason),
            self._condition("ContainersReady", containers_ready and phase == "Running",
                            not_ready_reason),
            self._condition("PodScheduled", True),
        ]
        owned = {c["type"] for c in ours}
        conditions = ours + [c for t, c in existing.items() if t not in owned]
        st = {"phase": phase, "conditions": conditions, "hostIP": "127.0.0.1",
              "hostIPs": [{"ip": "127.0.0.1"}], "podIP": self.ip, "podIPs": [{"ip": self.ip}],
              "startTime": self.start_time,
              "containerStatuses": [self._cstatus(c) for c in mains]}
        inits = [c for c in self.containers if c.init or c.spec in
                 (self.pod["spec"].get("initContainers") or [])]
        if inits:
            st["initContainerStatuses"] = [self._cstatus(c) for c in inits]
        return st

    def publish(self) -> None:
        if self.gone:
            return
        st = self.status()
        if st == self.last_status:
            return
        try:
            self.api.merge_patch(f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}/status",
                                 {"status": st})
            self.last_status = st
        except ApiError as e:
            if e.status == 404:
                self.gone = True
            else:
                log.warning("pod %s/%s: status: %s", self.ns, self.pod_name, e)
        except OSError as e:
            log.warning("pod %s/%s: status: %s", self.ns, self.pod_name, e)
