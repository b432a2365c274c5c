"""The node agent itself: the parts wired together (node registration, pod sync, DNS, the
kubelet endpoint) and its lifecycle. Processes never outlive it: it kills them when it stops,
each dies with it (PR_SET_PDEATHSIG), and leftovers of a killed agent are killed when it starts
again (a pod running then continues per its restartPolicy)."""

from __future__ import annotations

import signal
import threading
import uuid
from pathlib import Path

from localkube.kubeapi import KubeApi
from localkube.nodeagent.addresses import IpPool, claim_block
from localkube.nodeagent.common import log, now_iso
from localkube.nodeagent.config import AgentConfig
from localkube.nodeagent.dns import ClusterDns
from localkube.nodeagent.logserver import serve
from localkube.nodeagent.node import NodeRegistration
from localkube.nodeagent.podsync import PodSync
from localkube.nodeagent.process import Spawner, kill_leftovers
from localkube.nodeagent.worker import PodWorker


class NodeAgent(NodeRegistration, PodSync, ClusterDns):
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.api = KubeApi(cfg.kubeconfig)
        self.pods_dir = Path(cfg.state_dir) / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.ips = IpPool(claim_block(Path(cfg.state_dir)))
        self.workers: dict[str, PodWorker] = {}
        self.wlock = threading.Lock()
        self.stopped = threading.Event()
        self.spawner = Spawner()
        self.port = cfg.port
        self._dns: tuple[float, list] | None = None
        self._dns_lock = threading.Lock()
        self.boot_id = str(uuid.uuid4())

    def event(self, pod: dict, reason: str, message: str, etype: str = "Normal") -> None:
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                             "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": etype,
                "source": {"component": "kubelet", "host": self.cfg.name},
                "firstTimestamp": now_iso(), "lastTimestamp": now_iso(), "count": 1,
                "reportingComponent": "kubelet", "reportingInstance": self.cfg.name}
        try:
            self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)
        except Exception as e:  # noqa: BLE001 - events are best effort
            log.debug("event: %s", e)

    def run(self) -> None:
        kill_leftovers(self.pods_dir)
        if self.cfg.serving_cert:
            self._server = serve(self)
            self.port = self._server.server_address[1]
        else:
            log.warning("no serving certificate: `kubectl logs` is not served")
        while not self.stopped.is_set():
            try:
                self.register()
                break
            except Exception as e:  # noqa: BLE001 - the API server may still be starting
                log.warning("register: %s", e)
                self.stopped.wait(1)
        for target in (self._heartbeat_loop, self._watch_loop, self._hosts_loop):
            threading.Thread(target=target, name=target.__name__, daemon=True).start()
        log.info("node agent %s running (kubelet port %s, state %s)", self.cfg.name, self.port,
                 self.cfg.state_dir)
        while not self.stopped.wait(1):
            pass
        self.shutdown()

    def shutdown(self) -> None:
        log.info("stopping: killing every pod process")
        workers = self.workers_snapshot()
        for w in workers:
            w.stop()
        for w in workers:
            w.join(timeout=5)
        for w in workers:  # anything a stuck worker left behind
            for c in w.containers:
                if c.proc is not None and c.proc.poll() is None:
                    w._signal(c, signal.SIGKILL)
        self.spawner.shutdown()
