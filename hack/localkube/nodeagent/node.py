"""The node: registered (InternalIP 127.0.0.1, capacity from this machine or as told, labels,
taints) and kept Ready by a status heartbeat and a Lease in kube-node-lease, as kwok's node and
node-lease controllers do.

`NodeRegistration` is a part of NodeAgent: it needs self.api, self.cfg, self.port,
self.boot_id and self.stopped."""

from __future__ import annotations

import platform
import time

from localkube.kubeapi import ApiError
from localkube.nodeagent.common import log, now_iso, now_micro


class NodeRegistration:
    def node_status(self) -> dict:
        now = now_iso()
        cap = self.cfg.capacity()
        conds = [("Ready", "True", "KubeletReady", "the local node agent is posting ready status"),
                 ("MemoryPressure", "False", "KubeletHasSufficientMemory", "memory available"),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                 ("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PIDs")]
        return {
            "capacity": cap, "allocatable": cap,
            "conditions": [{"type": t, "status": s, "reason": r, "message": m,
                            "lastHeartbeatTime": now, "lastTransitionTime": self._started_iso}
                           for t, s, r, m in conds],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.cfg.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                             platform.machine(), platform.machine()),
                         "operatingSystem": "linux", "kernelVersion": platform.release(),
                         "osImage": "tauon local node agent", "bootID": self.boot_id,
                         "machineID": self.boot_id.replace("-", ""),
                         "systemUUID": self.boot_id,
                         "containerRuntimeVersion": "local://0.1",
                         "kubeletVersion": self._version, "kubeProxyVersion": ""},
        }

    def register(self) -> None:
        try:
            self._version = self.api.get("/version")["gitVersion"]
        except (ApiError, OSError):
            self._version = "v0.0.0-local"
        self._started_iso = now_iso()
        labels = {"kubernetes.io/hostname": self.cfg.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": self.node_status()["nodeInfo"]["architecture"],
                  "tauon.dev/node-agent": "true", **self.cfg.labels}
        if self.cfg.gpus:
            labels.setdefault("nvidia.com/gpu.present", "true")
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.cfg.name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {"taints": self.cfg.taints} if self.cfg.taints else {},
                "status": self.node_status()}
        try:
            self.api.create("/api/v1/nodes", node)
            log.info("registered node %s", self.cfg.name)
        except ApiError as e:
            if e.status != 409:
                raise
            self.api.merge_patch(f"/api/v1/nodes/{self.cfg.name}", {"metadata": {"labels": labels}})
        self.api.merge_patch(f"/api/v1/nodes/{self.cfg.name}/status", {"status": self.node_status()})
        self.node_uid = self.api.get(f"/api/v1/nodes/{self.cfg.name}")["metadata"]["uid"]

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.cfg.name}"
        spec = {"holderIdentity": self.cfg.name, "leaseDurationSeconds": self.cfg.lease_seconds,
                "renewTime": now_micro()}
        try:
            self.api.merge_patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.cfg.name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.cfg.name, "uid": self.node_uid}]},
                "spec": spec})

    def _heartbeat_loop(self) -> None:
        last_status = time.time()
        while not self.stopped.is_set():
            try:
                self._renew_lease()
                if time.time() - last_status >= self.cfg.heartbeat:
                    self.api.merge_patch(f"/api/v1/nodes/{self.cfg.name}/status",
                                         {"status": self.node_status()})
                    last_status = time.time()
            except ApiError as e:
                if e.status == 404 and "nodes" in str(e):
                    try:
                        self.register()
                    except Exception as e2:  # noqa: BLE001
                        log.warning("re-register: %s", e2)
                else:
                    log.warning("heartbeat: %s", e)
            except Exception as e:  # noqa: BLE001
                log.warning("heartbeat: %s", e)
            self.stopped.wait(min(5.0, self.cfg.heartbeat))
