"""The local node agent: a tiny kubelet that runs the pods bound to its node as local processes.

    python -m localkube.nodeagent --kubeconfig FILE --state-dir DIR --name local-agent

It registers a Node (InternalIP 127.0.0.1, capacity from this machine or as told), keeps it Ready
(node status heartbeat and a Lease in kube-node-lease) and, for every pod whose spec.nodeName is
its node:

* gives the pod its own loopback address 127.0.0.N (status.podIP),
* prepares its volumes under DIR/pods/<uid>/: persistentVolumeClaim -> the bound PV's hostPath
  directory, emptyDir -> a directory, configMap/secret/downwardAPI/projected (service-account
  tokens from the TokenRequest API) -> files,
* starts each container (image ignored: there is no container engine) with `podexec.py`: a
  private mount + UTS namespace in which volumes appear at their mountPaths, /etc/hosts is the
  pod's own (pod hostnames, Service names) and the hostname is the pod's; then command+args run
  with the pod's env (ConfigMaps, Secrets, downward API, $(VAR) expansion as kubelet does) and
  the "image" env (the project's venv first on PATH),
* runs startup/readiness/liveness probes, restarts per restartPolicy with back-off, and reports
  phase, conditions and container statuses (exit codes, termination messages),
* serves `kubectl logs` (a kubelet HTTPS endpoint: /containerLogs/...) on 127.0.0.1,
* on deletion sends SIGTERM to the container process groups, SIGKILL after the grace period,
  then deletes the pod with grace 0. Processes never outlive the agent: it kills them when it
  stops, each dies with it (PR_SET_PDEATHSIG), and leftovers of a killed agent are killed when
  it starts again (a pod running then continues per its restartPolicy).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import http.client
import http.server
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from localkube.kubeapi import ApiError, KubeApi

log = logging.getLogger("localkube.nodeagent")

PODEXEC = Path(__file__).resolve().parent / "podexec.py"
TERMINAL = ("Succeeded", "Failed")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_MESSAGE = 4096


# ------------------------------------------------------------------------------------ helpers
def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "Pi": 2**50, "Ei": 2**60}


def parse_quantity(q) -> float:
    m = re.fullmatch(r"([+-]?[0-9.]+)(?:[eE]([+-]?\d+)|([a-zA-Z]*))", str(q).strip())
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    value = float(m.group(1))
    if m.group(2):
        return value * 10 ** int(m.group(2))
    return value * _SUFFIX[m.group(3) or ""]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $(VAR) -> value if defined, else left as is; $$ -> $."""
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2:close]
                out.append(env[name] if name in env else f"$({name})")
                i = close + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp.startswith(prefix) or mp == str(path):
            out.append(mp)
    return out


def safe_rmtree(path: Path) -> None:
    """rm -rf that refuses to descend into a directory with anything mounted under it."""
    if not path.exists():
        return
    if mounts_under(path):
        log.warning("not removing %s: something is mounted under it", path)
        return
    shutil.rmtree(path, ignore_errors=True)


class Retry(Exception):
    """A pod cannot start yet (a ConfigMap, a PVC binding...): try again shortly."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------ config
@dataclass
class AgentConfig:
    name: str
    kubeconfig: str
    state_dir: Path
    cpu: str = ""
    memory: str = ""
    pods: int = 110
    gpus: int = 0
    labels: dict = field(default_factory=dict)
    taints: list = field(default_factory=list)
    image_env: dict = field(default_factory=dict)
    # The "image": host paths every container sees at the same path, read-only, even under a
    # volume mounted above them (the checkout may live under /tmp, where pods mount emptyDirs).
    image_paths: list = field(default_factory=list)
    port: int = 0
    serving_cert: str = ""
    serving_key: str = ""
    client_ca: str = ""
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    lease_seconds: int = 40
    heartbeat: float = 10.0

    def capacity(self) -> dict:
        cpu = self.cpu or str(os.cpu_count() or 1)
        memory = self.memory
        if not memory:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory = f"{line.split()[1]}Ki"
        cap = {"cpu": cpu, "memory": memory or "1Gi", "pods": str(self.pods),
               "ephemeral-storage": f"{shutil.disk_usage(self.state_dir).total // 2**20}Mi"}
        if self.gpus:
            cap["nvidia.com/gpu"] = str(self.gpus)
        return cap


# ------------------------------------------------------------------------------------ IPs
class IpPool:
    """127.0.0.2 ... 127.0.0.254, then 127.0.1.1 ...: unique among live pods, handed out
    round-robin so a freed address is not reused at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_uid: dict[str, str] = {}
        self._next = 0

    @staticmethod
    def _nth(n: int) -> str:
        n += 2  # skip 127.0.0.0 and 127.0.0.1
        return f"127.0.{n // 255}.{n % 255}"

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        with self._lock:
            if uid in self._by_uid:
                return self._by_uid[uid]
            used = set(self._by_uid.values())
            if preferred and preferred.startswith("127.") and preferred != "127.0.0.1" \
                    and preferred not in used:
                self._by_uid[uid] = preferred
                return preferred
            for _ in range(255 * 250):
                ip = self._nth(self._next)
                self._next = (self._next + 1) % (255 * 250)
                if ip.endswith(".0") or ip in used:
                    continue
                self._by_uid[uid] = ip
                return ip
            raise RuntimeError("no free pod address")

    def release(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)


# ------------------------------------------------------------------------------------ hosts
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


# ------------------------------------------------------------------------------------ containers
@dataclass
class Probe:
    kind: str
    spec: dict
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    ok: bool | None = None  # the current verdict (None: not decided yet)


@dataclass
class Container:
    spec: dict
    init: bool = False
    restart_policy: str = "Always"
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_count: int = 0
    attempts: int = 0  # how many times it was started (the log file index)
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    done: bool = False
    backoff_until: float = 0.0
    backoff: float = 0.0
    ready: bool = False
    started: bool = False
    probes: dict = field(default_factory=dict)
    kill_reason: str = ""

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


# ------------------------------------------------------------------------------------ pod worker
class PodWorker(threading.Thread):
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

    # -------------------------------------------------------------- volumes
    def _get(self, path: str) -> dict:
        try:
            return self.api.get(path)
        except ApiError as e:
            if e.status in (403, 404):
                # 403: the Node authorizer has not yet linked this pod to the object.
                raise Retry("CreateContainerConfigError", f"{path}: {e.reason or e.status}")
            raise

    def _configmap(self, name: str, optional: bool = False) -> dict | None:
        try:
            return self._get(f"/api/v1/namespaces/{self.ns}/configmaps/{name}")
        except Retry:
            if optional:
                return None
            raise Retry("CreateContainerConfigError", f'configmap "{name}" not found')

    def _secret(self, name: str, optional: bool = False) -> dict | None:
        try:
            return self._get(f"/api/v1/namespaces/{self.ns}/secrets/{name}")
        except Retry:
            if optional:
                return None
            raise Retry("CreateContainerConfigError", f'secret "{name}" not found')

    def _prepare_volumes(self) -> None:
        vols = {}
        self.token_refresh = []
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            vdir = self.dir / "volumes" / name
            if "emptyDir" in v:
                vdir.mkdir(parents=True, exist_ok=True)
                vols[name] = {"path": str(vdir), "readOnly": False}
            elif "hostPath" in v:
                hp = v["hostPath"]
                p = Path(hp["path"])
                if hp.get("type") == "DirectoryOrCreate":
                    p.mkdir(parents=True, exist_ok=True)
                elif hp.get("type") == "FileOrCreate" and not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                vols[name] = {"path": str(p), "readOnly": False}
            elif "persistentVolumeClaim" in v:
                ref = v["persistentVolumeClaim"]
                pvc = self._get(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{ref['claimName']}")
                if pvc.get("status", {}).get("phase") != "Bound" or not pvc["spec"].get("volumeName"):
                    raise Retry("ContainerCreating", f"waiting for PVC {ref['claimName']} to be bound")
                pv = self._get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
                src = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not src:
                    raise Retry("ContainerCreating",
                                f"PV {pv['metadata']['name']} has no hostPath/local path")
                Path(src).mkdir(parents=True, exist_ok=True)
                vols[name] = {"path": src, "readOnly": bool(ref.get("readOnly"))}
            elif any(k in v for k in ("configMap", "secret", "downwardAPI", "projected")):
                tmp = self.dir / "volumes" / f".{name}.new"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                self._write_files(v, tmp)
                shutil.rmtree(vdir, ignore_errors=True)
                tmp.rename(vdir)
                vols[name] = {"path": str(vdir), "readOnly": True}
            else:
                kind = next((k for k in v if k != "name"), "?")
                raise Retry("CreateContainerConfigError", f"volume type {kind} is not supported")
        self.volumes = vols

    def _write_files(self, v: dict, root: Path) -> None:
        def put(rel: str, data: bytes, mode: int | None, default: int) -> None:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(mode if mode is not None else default)

        def keyed(data: dict[str, bytes], src: dict, default_mode: int, optional_obj: bool) -> None:
            items = src.get("items")
            if items:
                for it in items:
                    if it["key"] not in data:
                        if src.get("optional"):
                            continue
                        raise Retry("CreateContainerConfigError", f"key {it['key']} not found")
                    put(it["path"], data[it["key"]], it.get("mode"), default_mode)
            else:
                for k, val in data.items():
                    put(k, val, None, default_mode)

        def cm_data(src: dict) -> dict[str, bytes] | None:
            cm = self._configmap(src["name"], src.get("optional", False))
            if cm is None:
                return None
            d = {k: val.encode() for k, val in (cm.get("data") or {}).items()}
            d.update({k: base64.b64decode(val) for k, val in (cm.get("binaryData") or {}).items()})
            return d

        def secret_data(src: dict) -> dict[str, bytes] | None:
            s = self._secret(src.get("secretName") or src.get("name"), src.get("optional", False))
            if s is None:
                return None
            return {k: base64.b64decode(val) for k, val in (s.get("data") or {}).items()}

        def downward(items: list, default_mode: int) -> None:
            for it in items:
                if "fieldRef" in it:
                    val = self._field(it["fieldRef"]["fieldPath"], for_file=True)
                else:
                    val = self._resource(it["resourceFieldRef"])
                put(it["path"], val.encode(), it.get("mode"), default_mode)

        if "configMap" in v:
            src = v["configMap"]
            d = cm_data(src)
            if d is not None:
                keyed(d, src, src.get("defaultMode", 0o644), True)
        elif "secret" in v:
            src = v["secret"]
            d = secret_data(src)
            if d is not None:
                keyed(d, src, src.get("defaultMode", 0o644), True)
        elif "downwardAPI" in v:
            downward(v["downwardAPI"].get("items") or [], v["downwardAPI"].get("defaultMode", 0o644))
        else:
            proj = v["projected"]
            mode = proj.get("defaultMode", 0o644)
            for s in proj.get("sources") or []:
                if "configMap" in s:
                    d = cm_data(s["configMap"])
                    if d is not None:
                        keyed(d, s["configMap"], mode, True)
                elif "secret" in s:
                    d = secret_data(s["secret"])
                    if d is not None:
                        keyed(d, s["secret"], mode, True)
                elif "downwardAPI" in s:
                    downward(s["downwardAPI"].get("items") or [], mode)
                elif "serviceAccountToken" in s:
                    tok = s["serviceAccountToken"]
                    token, ttl = self._token(tok)
                    put(tok["path"], token.encode(), None, mode)
                    self.token_refresh.append((time.time() + 0.8 * ttl, tok,
                                               Path(v["name"]) / tok["path"]))
                else:
                    log.warning("pod %s/%s: projected source %s not supported", self.ns,
                                self.pod_name, list(s))

    def _token(self, tok: dict) -> tuple[str, float]:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [tok["audience"]] if tok.get("audience") else [],
                         "expirationSeconds": int(tok.get("expirationSeconds") or 3607),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                            "name": self.pod_name, "uid": self.uid}}}
        try:
            res = self.api.create(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        except ApiError as e:
            if e.status in (403, 404):
                raise Retry("ContainerCreating", f"service account token for {sa}: {e.reason or e.status}")
            raise
        exp = dt.datetime.strptime(res["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        ttl = exp.replace(tzinfo=dt.timezone.utc).timestamp() - time.time()
        return res["status"]["token"], max(ttl, 60)

    def _refresh_tokens(self, now: float) -> None:
        for i, (due, tok, rel) in enumerate(self.token_refresh):
            if now < due:
                continue
            try:
                token, ttl = self._token(tok)
            except Exception as e:  # noqa: BLE001 - keep the old token, retry later
                log.warning("pod %s/%s: token refresh: %s", self.ns, self.pod_name, e)
                self.token_refresh[i] = (now + 30, tok, rel)
                continue
            target = self.dir / "volumes" / rel
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(token)
            tmp.chmod(target.stat().st_mode & 0o7777)
            # Rewritten in place: a bind-mounted directory sees the new contents.
            target.write_text(token)
            tmp.unlink()
            self.token_refresh[i] = (now + 0.8 * ttl, tok, rel)

    # -------------------------------------------------------------- env and downward API
    def _field(self, path: str, for_file: bool = False) -> str:
        pod, meta = self.pod, self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"], "spec.nodeName": self.agent.cfg.name,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1",
            "status.podIP": self.ip, "status.podIPs": self.ip,
        }
        if path in simple:
            return simple[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            d = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{json.dumps(v)[1:-1]}"' for k, v in sorted(d.items()))
        raise Retry("CreateContainerConfigError", f"unsupported fieldPath {path}")

    def _resource(self, ref: dict, container: dict | None = None) -> str:
        cname = ref.get("containerName")
        c = container
        if cname or c is None:
            c = next((x for x in self.pod["spec"]["containers"] if x["name"] == cname),
                     self.pod["spec"]["containers"][0])
        kind, _, res = ref["resource"].partition(".")
        resources = c.get("resources") or {}
        val = (resources.get(kind) or {}).get(res)
        if val is None and kind == "requests":
            val = (resources.get("limits") or {}).get(res)
        if val is None:
            val = self.agent.cfg.capacity().get(res, "0")
        divisor = parse_quantity(ref.get("divisor") or "1") or 1
        return str(math.ceil(parse_quantity(val) / divisor))

    def _env(self, c: dict) -> dict[str, str]:
        cfg = self.agent.cfg
        api_port = str(self.api.port)
        env = {
            "PATH": cfg.image_env.get("PATH", os.environ.get("PATH", "/usr/bin:/bin")),
            "HOSTNAME": pod_hostname(self.pod),
            "HOME": "/root",
        }
        env.update(cfg.image_env)
        service = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": api_port,
                   "KUBERNETES_SERVICE_PORT_HTTPS": api_port,
                   "KUBERNETES_PORT": f"tcp://127.0.0.1:{api_port}",
                   "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{api_port}",
                   "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                   "KUBERNETES_PORT_443_TCP_PORT": api_port,
                   "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
                   "GLOO_SOCKET_IFNAME": "lo"}
        env.update(service)
        pod_env: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                ref = src["configMapRef"]
                cm = self._configmap(ref["name"], ref.get("optional", False)) or {}
                for k, val in (cm.get("data") or {}).items():
                    pod_env[prefix + k] = val
            elif "secretRef" in src:
                ref = src["secretRef"]
                s = self._secret(ref["name"], ref.get("optional", False)) or {}
                for k, val in (s.get("data") or {}).items():
                    pod_env[prefix + k] = base64.b64decode(val).decode(errors="replace")
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e or "valueFrom" not in e:
                pod_env[name] = expand(e.get("value", ""), {**env, **pod_env})
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                pod_env[name] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                pod_env[name] = self._resource(vf["resourceFieldRef"], c)
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                cm = self._configmap(ref["name"], ref.get("optional", False))
                data = (cm or {}).get("data") or {}
                if ref["key"] in data:
                    pod_env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise Retry("CreateContainerConfigError",
                                f"couldn't find key {ref['key']} in ConfigMap {self.ns}/{ref['name']}")
            elif "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                s = self._secret(ref["name"], ref.get("optional", False))
                data = (s or {}).get("data") or {}
                if ref["key"] in data:
                    pod_env[name] = base64.b64decode(data[ref["key"]]).decode(errors="replace")
                elif not ref.get("optional"):
                    raise Retry("CreateContainerConfigError",
                                f"couldn't find key {ref['key']} in Secret {self.ns}/{ref['name']}")
        env.update(pod_env)
        return env

    # -------------------------------------------------------------- running containers
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
        c.proc = self.agent.spawn([sys.executable, "-S", str(PODEXEC), str(plan_file)], log_file)
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
        if c.proc is None:
            return
        try:
            os.killpg(c.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_all(self, grace: float) -> None:
        running = [c for c in self.containers if c.running]
        for c in running:
            self._signal(c, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and any(c.proc.poll() is None for c in running):
            time.sleep(0.05)
        for c in running:
            self._signal(c, signal.SIGKILL)  # the whole group: children too
        for c in running:
            try:
                c.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if c.proc.returncode is not None:
                self._on_exit(c)

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

    # -------------------------------------------------------------- probes
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
                self._signal(c, signal.SIGTERM)
                end = time.time() + grace
                while time.time() < end and c.proc.poll() is None:
                    time.sleep(0.05)
                self._signal(c, signal.SIGKILL)
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

    # -------------------------------------------------------------- hosts
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

    # -------------------------------------------------------------- status
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


# ------------------------------------------------------------------------------------ kubelet API
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
            self.agent.orphan_log(ns, pod, container, previous)
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


# ------------------------------------------------------------------------------------ the agent
class NodeAgent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.api = KubeApi(cfg.kubeconfig)
        self.pods_dir = Path(cfg.state_dir) / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.ips = IpPool()
        self.workers: dict[str, PodWorker] = {}
        self.wlock = threading.Lock()
        self.stopped = threading.Event()
        self.spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spawner")
        self.port = cfg.port
        self._dns: tuple[float, list] | None = None
        self._dns_lock = threading.Lock()
        self.boot_id = str(uuid.uuid4())

    # -------------------------------------------------------------- processes
    def spawn(self, argv: list[str], log_file: Path) -> subprocess.Popen:
        """Starts a process from one long-lived thread: PR_SET_PDEATHSIG fires when the thread
        that forked the child exits, so it must not be a pod worker's."""
        def go():
            with open(log_file, "ab") as out:
                return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                        close_fds=True)
        return self.spawner.submit(go).result()

    def kill_leftovers(self) -> None:
        """Processes recorded by a previous agent that are still alive are killed (group)."""
        for pidfile in self.pods_dir.glob("*/containers/*/pid"):
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

    # -------------------------------------------------------------- workers
    def forget(self, w: PodWorker) -> None:
        pass  # kept in self.workers until the pod is gone, so logs stay reachable

    def workers_snapshot(self) -> list[PodWorker]:
        with self.wlock:
            return list(self.workers.values())

    def worker_for(self, ns: str, name: str) -> PodWorker | None:
        found = [w for w in self.workers_snapshot() if w.ns == ns and w.pod_name == name]
        return found[-1] if found else None

    def orphan_log(self, ns: str, name: str, container: str, previous: bool) -> Path | None:
        for meta in self.pods_dir.glob("*/pod.json"):
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

    def sync(self, pod: dict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.wlock:
            w = self.workers.get(uid)
            if w is None:
                phase = pod.get("status", {}).get("phase")
                if phase in TERMINAL:
                    # Finished before this agent started: only its deletion is left to do.
                    if meta.get("deletionTimestamp"):
                        threading.Thread(target=self._delete_finished, args=(pod,),
                                         daemon=True).start()
                    return
                w = PodWorker(self, pod)
                # Addresses are taken here, in watch order: a live pod keeps the one it reported.
                self.ips.allocate(uid, pod.get("status", {}).get("podIP"))
                self.workers[uid] = w
                w.start()
                return
        w.update(pod)
        if not w.is_alive() and meta.get("deletionTimestamp"):
            with self.wlock:
                self.workers.pop(uid, None)
            threading.Thread(target=self._delete_finished, args=(pod,), daemon=True).start()

    def _delete_finished(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                            {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except (ApiError, OSError) as e:
            log.debug("delete %s: %s", meta["name"], e)
        safe_rmtree(self.pods_dir / meta["uid"])

    def gone(self, uid: str) -> None:
        with self.wlock:
            w = self.workers.pop(uid, None)
        if w is not None:
            if w.is_alive():
                w.vanish()
            else:
                safe_rmtree(w.dir)
        else:
            safe_rmtree(self.pods_dir / uid)

    # -------------------------------------------------------------- DNS (hosts files)
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

    # -------------------------------------------------------------- node
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

    # -------------------------------------------------------------- pods watch
    def _watch_loop(self) -> None:
        path = "/api/v1/pods"
        selector = f"spec.nodeName={self.cfg.name}"
        rv = None
        while not self.stopped.is_set():
            try:
                if rv is None:
                    lst = self.api.get(path, fieldSelector=selector)
                    rv = lst["metadata"]["resourceVersion"]
                    seen = {p["metadata"]["uid"] for p in lst["items"]}
                    for w in self.workers_snapshot():
                        if w.uid not in seen:
                            self.gone(w.uid)
                    for p in lst["items"]:  # live pods keep their addresses
                        st = p.get("status", {})
                        if st.get("podIP") and st.get("phase") not in TERMINAL:
                            self.ips.allocate(p["metadata"]["uid"], st["podIP"])
                    for p in lst["items"]:
                        self.sync(p)
                    self._clean_orphan_dirs(seen)
                for ev in self.api.watch(path, {"fieldSelector": selector, "resourceVersion": rv,
                                                "timeoutSeconds": 300}):
                    if self.stopped.is_set():
                        return
                    obj = ev.get("object") or {}
                    if ev["type"] == "ERROR":
                        rv = None if obj.get("code") == 410 else rv
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    if ev["type"] == "DELETED":
                        self.gone(obj["metadata"]["uid"])
                    else:
                        self.sync(obj)
            except ApiError as e:
                log.warning("pod watch: %s", e)
                rv = None
                self.stopped.wait(1)
            except Exception as e:  # noqa: BLE001 - the agent keeps going
                log.warning("pod watch: %r", e)
                rv = None
                self.stopped.wait(1)

    def _clean_orphan_dirs(self, live_uids: set[str]) -> None:
        for d in self.pods_dir.iterdir():
            if d.is_dir() and d.name not in live_uids:
                safe_rmtree(d)

    # -------------------------------------------------------------- kubelet endpoint
    def _serve(self) -> None:
        handler = type("Handler", (KubeletHandler,), {"agent": self})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.cfg.port), handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cfg.serving_cert, self.cfg.serving_key)
        if self.cfg.client_ca:
            ctx.load_verify_locations(self.cfg.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()

    # -------------------------------------------------------------- lifecycle
    def run(self) -> None:
        self.kill_leftovers()
        if self.cfg.serving_cert:
            self._serve()
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
        self.spawner.shutdown(wait=False)


def _kv(items: list[str]) -> dict[str, str]:
    return dict(i.split("=", 1) for i in items)


def _taint(s: str) -> dict:
    kv, _, effect = s.partition(":")
    key, _, value = kv.partition("=")
    t = {"key": key, "effect": effect or "NoSchedule"}
    if value:
        t["value"] = value
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m localkube.nodeagent", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--name", default="local-agent")
    ap.add_argument("--cpu", default="", help="cpu capacity (default: this machine's CPUs)")
    ap.add_argument("--memory", default="", help="memory capacity (default: MemTotal)")
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu to advertise")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--taint", action="append", default=[], metavar="KEY[=VALUE]:EFFECT")
    ap.add_argument("--image-env", action="append", default=[], metavar="KEY=VALUE",
                    help="env every container starts with (the 'image' ENV)")
    ap.add_argument("--image-path", action="append", default=[], metavar="PATH",
                    help="a host path every container sees, read-only (the 'image' files)")
    ap.add_argument("--port", type=int, default=0, help="kubelet HTTPS port (default: any)")
    ap.add_argument("--serving-cert", default="")
    ap.add_argument("--serving-key", default="")
    ap.add_argument("--client-ca", default="", help="CA that signs the API server's client cert")
    ap.add_argument("--backoff", type=float, default=1.0, help="first restart back-off (s)")
    ap.add_argument("--backoff-max", type=float, default=60.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The venv's real bin/ (its link may sit under a path a pod volume covers, such as /tmp).
    venv_bin = os.path.realpath(Path(sys.executable).parent)
    image_env = {"PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", **_kv(args.image_env)}
    cfg = AgentConfig(name=args.name, kubeconfig=args.kubeconfig, state_dir=args.state_dir.resolve(),
                      cpu=args.cpu, memory=args.memory, pods=args.pods, gpus=args.gpus,
                      labels=_kv(args.label), taints=[_taint(t) for t in args.taint],
                      image_env=image_env, image_paths=args.image_path,
                      port=args.port, serving_cert=args.serving_cert,
                      serving_key=args.serving_key, client_ca=args.client_ca,
                      backoff_base=args.backoff, backoff_max=args.backoff_max)
    agent = NodeAgent(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopped.set())
    agent.run()


if __name__ == "__main__":
    main()
