"""Names: the records a pod's /etc/hosts carries (pods with hostname+subdomain, Services by
their ready pods, as there is no kube-proxy), rendered per pod and kept fresh.

`ClusterDns` is the agent's part (one snapshot of the records, refreshed every two seconds into
every pod's hosts file); `HostsFile` is the pod worker's (its own file, rewritten in place)."""

from __future__ import annotations

import time

from localkube.kubeapi import ApiError
from localkube.nodeagent.common import TERMINAL, log


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def live_with_ip(pod: dict) -> bool:
    st = pod.get("status", {})
    return bool(st.get("podIP")) and st.get("phase") not in TERMINAL \
        and not pod["metadata"].get("deletionTimestamp")


def dns_records(pods: list[dict], services: list[dict], node: str) -> list[tuple[str, str, str]]:
    """(ip, prefix, namespace) records, the name being <prefix>.<namespace>.svc.cluster.local:
    pods with hostname+subdomain, headless Services (every ready pod) and ClusterIP Services
    (one ready pod, preferring this node's, since there is no kube-proxy)."""
    recs = []
    live = [p for p in pods if live_with_ip(p)]
    for p in live:
        spec = p["spec"]
        if spec.get("hostname") and spec.get("subdomain"):
            recs.append((p["status"]["podIP"], f"{spec['hostname']}.{spec['subdomain']}",
                         p["metadata"]["namespace"]))
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec", {})
        sel = spec.get("selector")
        if not sel or spec.get("type") == "ExternalName":
            continue
        members = [p for p in live if p["metadata"]["namespace"] == meta["namespace"]
                   and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
        if not spec.get("publishNotReadyAddresses"):
            members = [p for p in members if pod_ready(p)]
        if not members:
            continue
        members.sort(key=lambda p: (p["spec"].get("nodeName") != node,
                                    p["metadata"].get("creationTimestamp", ""),
                                    p["metadata"]["name"]))
        if spec.get("clusterIP") not in ("None", None):
            members = members[:1]
        for p in members:
            recs.append((p["status"]["podIP"], meta["name"], meta["namespace"]))
    return recs


def render_hosts(pod: dict, ip: str, records: list[tuple[str, str, str]] | None) -> str:
    ns = pod["metadata"]["namespace"]
    hostname = pod_hostname(pod)
    lines = ["# Kubernetes-managed hosts file (tauon local node agent).",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    sub = pod["spec"].get("subdomain")
    if sub:
        lines.append(f"{ip}\t{hostname}.{sub}.{ns}.svc.cluster.local\t{hostname}")
    else:
        lines.append(f"{ip}\t{hostname}")
    api = ["kubernetes.default.svc.cluster.local", "kubernetes.default.svc", "kubernetes.default"]
    if ns == "default":
        api.append("kubernetes")
    lines.append("127.0.0.1\t" + " ".join(api))
    seen = set()
    for rip, prefix, rns in records or []:
        names = [f"{prefix}.{rns}.svc.cluster.local", f"{prefix}.{rns}.svc", f"{prefix}.{rns}"]
        if rns == ns:
            names.append(prefix)
        key = (rip, names[0])
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{rip}\t" + " ".join(names))
    return "\n".join(lines) + "\n"


def pod_hostname(pod: dict) -> str:
    return (pod["spec"].get("hostname") or pod["metadata"]["name"])[:63].rstrip("-.")


class ClusterDns:
    """The agent's DNS records, for NodeAgent: needs self.api, self.cfg, self.stopped,
    self.workers_snapshot()."""

    def dns_snapshot(self, force: bool = False) -> list | None:
        with self._dns_lock:
            if not force and self._dns and time.time() - self._dns[0] < 1.0:
                return self._dns[1]
            try:
                # A node may list only its own pods: those are the reachable ones anyway
                # (pods on kwok's simulated nodes have addresses nothing answers on).
                pods = self.api.get("/api/v1/pods",
                                    fieldSelector=f"spec.nodeName={self.cfg.name}")["items"]
                services = self.api.get("/api/v1/services")["items"]
            except (ApiError, OSError) as e:
                log.warning("hosts: %s", e)
                return self._dns[1] if self._dns else None
            # Our own pods: the freshest IPs and readiness are the workers'.
            mine = {w.uid: w for w in self.workers_snapshot()}
            for p in pods:
                w = mine.get(p["metadata"]["uid"])
                if w is not None and w.ip:
                    p["status"] = {**p.get("status", {}), **(w.last_status or {}), "podIP": w.ip}
            recs = dns_records(pods, services, self.cfg.name)
            self._dns = (time.time(), recs)
            return recs

    def _hosts_loop(self) -> None:
        while not self.stopped.wait(2.0):
            try:
                workers = [w for w in self.workers_snapshot() if w.is_alive() and w.ip]
                if not workers:
                    continue
                recs = self.dns_snapshot()
                for w in workers:
                    if (w.dir / "hosts").exists():
                        w.refresh_hosts(recs)
            except Exception:  # noqa: BLE001
                log.exception("hosts refresh")


class HostsFile:
    """A pod's own /etc/hosts, for PodWorker: needs self.pod, self.ip, self.dir."""

    def refresh_hosts(self, records) -> None:
        text = render_hosts(self.pod, self.ip, records)
        with self.hosts_lock:
            if text == self.hosts_text:
                return
            path = self.dir / "hosts"
            # Written in place: the bind mounts in the pod's namespace see the same inode.
            with open(path, "r+" if path.exists() else "w") as f:
                f.write(text)
                f.truncate()
            self.hosts_text = text
