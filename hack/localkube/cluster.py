"""Start and stop a real control plane on 127.0.0.1: the Python API behind `make cluster-up`,
the pytest fixture and the demo."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from localkube import pki
from localkube.procutil import alive, free_port, http_ok, terminate

HACK = Path(__file__).resolve().parent.parent
REPO = HACK.parent
STORAGE_CLASS = "tauon-local"
PROVISIONER = "tauon.dev/local-dir"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
SERVICE_CIDR = "10.0.0.0/24"


class ClusterError(RuntimeError):
    """The control plane could not be started or did not become healthy."""


@dataclass(frozen=True)
class NodeSpec:
    """A node simulated by kwok: GPUs are advertised as the nvidia device plugin would."""

    name: str
    cpu: str = "64"
    memory: str = "512Gi"
    gpus: int = 8
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict, ...] = ()

    def manifest(self) -> dict:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            **({"nvidia.com/gpu.present": "true"} if self.gpus else {}),
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                                "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": list(self.taints)} if self.taints else {},
            "status": {"capacity": capacity, "allocatable": capacity},
        }


@dataclass(frozen=True)
class NodeAgentSpec:
    """The local node agent (localkube.nodeagent): a real node whose pods run as processes on
    this machine. cpu/memory default to this machine's; gpus advertises nvidia.com/gpu."""

    name: str = "local-agent"
    cpu: str = ""
    memory: str = ""
    gpus: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()        # "key[=value]:Effect"
    image_env: dict[str, str] = field(default_factory=dict)  # env every container starts with
    image_paths: tuple[str, ...] = ()   # host paths every container sees (the "image" files)
    backoff: float = 1.0                # first restart back-off in seconds (kubelet: 10)

    def argv(self) -> list[str]:
        out = [f"--name={self.name}", f"--pods={self.pods}", f"--gpus={self.gpus}",
               f"--backoff={self.backoff}"]
        out += [f"--cpu={self.cpu}"] if self.cpu else []
        out += [f"--memory={self.memory}"] if self.memory else []
        out += [f"--label={k}={v}" for k, v in self.labels.items()]
        out += [f"--taint={t}" for t in self.taints]
        out += [f"--image-env={k}={v}" for k, v in self.image_env.items()]
        out += [f"--image-path={p}" for p in self.image_paths]
        return out


def gpu_nodes(count: int = 4, gpus: int = 8, prefix: str = "gpu-node") -> list[NodeSpec]:
    """The default fleet: `count` nodes with 8 nvidia.com/gpu, 64 CPU and 512Gi each."""
    return [NodeSpec(name=f"{prefix}-{i}", gpus=gpus) for i in range(count)]


def build_binaries() -> Path:
    """Builds (or finds in the cache) the control-plane binaries; returns their directory."""
    out = subprocess.run(
        [str(HACK / "build-control-plane.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def tool(name: str) -> str:
    """kubectl and helm live next to this Python (the project's venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise ClusterError(f"{name} not found: run hack/setup-venv.sh")
    return found


class Cluster:
    """A running control plane. Use `Cluster.start()` (a context manager) or `Cluster.attach()`."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.pki = self.state_dir / "pki"
        self.logs = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._owned_state_dir = False
        self.access_modes: tuple[str, ...] = (
            "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
        self.object_store = None  # localkube.objectstore.ObjectStore, once started

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def start(
        cls,
        state_dir: Path | None = None,
        nodes: list[NodeSpec] | None = None,
        bin_dir: Path | None = None,
        timeout: float = 120.0,
        agent: NodeAgentSpec | bool | None = None,
        audit: bool = False,
        access_modes: tuple[str, ...] | None = None,
    ) -> "Cluster":
        """Generates certificates, starts every component detached, waits until nodes are Ready.
        With `agent` (True or a NodeAgentSpec) a local node agent joins as a real node. With
        `audit` the API server logs every write (who, what, where) to logs/audit.jsonl: see
        `writes()`. `access_modes`: what the local StorageClass provides (default all; pass
        ("ReadWriteOnce",) to be a block-storage cluster that refuses RWX claims)."""
        owned = state_dir is None
        state_dir = Path(state_dir or tempfile.mkdtemp(prefix="tauon-cluster-"))
        if not owned and state_dir.exists():
            if (state_dir / "cluster.json").exists() and cls.attach(state_dir).info.get("pids"):
                raise ClusterError(f"a cluster is still running in {state_dir}: stop it first")
            shutil.rmtree(state_dir)  # a fresh cluster: no etcd data from the last one
        state_dir.mkdir(parents=True, exist_ok=True)
        self = cls(state_dir)
        self._owned_state_dir = owned
        if access_modes:
            self.access_modes = tuple(access_modes)
        bin_dir = bin_dir or build_binaries()
        nodes = gpu_nodes() if nodes is None else nodes
        try:
            self._start(bin_dir, nodes, timeout, audit)
            if agent:
                self.start_agent(agent if isinstance(agent, NodeAgentSpec) else NodeAgentSpec())
        except BaseException:
            self.stop()
            raise
        return self

    @classmethod
    def attach(cls, state_dir: Path) -> "Cluster":
        """A handle on a cluster started by another process (e.g. `make cluster-up`)."""
        self = cls(state_dir)
        if not (self.state_dir / "cluster.json").exists():
            raise ClusterError(f"no cluster state in {state_dir}")
        return self

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def info(self) -> dict:
        return json.loads((self.state_dir / "cluster.json").read_text())

    @property
    def server(self) -> str:
        return self.info["server"]

    def _save(self, **updates) -> None:
        path = self.state_dir / "cluster.json"
        info = json.loads(path.read_text()) if path.exists() else {"pids": {}}
        info.update(updates)
        path.write_text(json.dumps(info, indent=2))

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Starts a process that belongs to this cluster: detached, logged to logs/<name>.log,
        stopped (first, as the last started) by `stop()` and `make cluster-down`."""
        return self._spawn(name, argv, env)

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `make cluster-up`; stopped by pid
            env={**os.environ, **(env or {})},
            cwd=self.state_dir,
        )
        log.close()
        pids = self.info.get("pids", {}) if (self.state_dir / "cluster.json").exists() else {}
        pids[name] = proc.pid
        self._save(pids=pids)
        return proc

    def _start(self, bin_dir: Path, nodes: list[NodeSpec], timeout: float, audit: bool) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        pki.generate(self.pki)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        self._save(server=server, bin_dir=str(bin_dir), pids={})
        for ident in pki.IDENTITIES:
            (self.state_dir / f"{ident.name}.kubeconfig").write_text(
                pki.kubeconfig(self.pki, server, ident.name)
            )
        shutil.copy(self.state_dir / "admin.kubeconfig", self.kubeconfig)

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            str(bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throw-away store: durability buys nothing here
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ])
        self._wait(lambda: http_ok(f"{etcd_url}/health"), deadline, "etcd /health")

        p = self.pki
        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # PodSecurity is in the default admission chain; NodeRestriction joins it.
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--allow-privileged=true",
            # The apiserver listens on loopback, which may not back the `kubernetes` Service
            # endpoints; pods reach it through the address the node agent gives them.
            "--endpoint-reconciler-type=none",
            # /debug/pprof for a benchmark that profiles the API server (LOCALKUBE_PROFILING=1).
            f"--profiling={'true' if os.environ.get('LOCALKUBE_PROFILING') == '1' else 'false'}",
            # Logs, exec and port-forward go to the kubelet (the node agent) at its InternalIP.
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--v=1",
            *(self._audit_args() if audit else []),
        ])
        self._wait(self._apiserver_ready, deadline, "kube-apiserver /readyz")

        common = [
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            # The defaults (20 qps) throttle a 1,000-Job burst; a dev cluster can afford more.
            "--kube-api-qps=100",
            "--kube-api-burst=200",
        ]
        self._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
            f"--secure-port={free_port()}",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam",
            *common,
        ])
        self._spawn("kube-scheduler", [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={self.state_dir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.state_dir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.state_dir / 'scheduler.kubeconfig'}",
            f"--secure-port={free_port()}",
            *common,
        ])
        stages = HACK / "kwok" / "stages.yaml"
        self._spawn("kwok", [
            str(bin_dir / "kwok"),
            f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION[0]}={KWOK_NODE_ANNOTATION[1]}",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        ])
        self._spawn("provisioner", [
            sys.executable, "-m", "localkube.provisioner",
            f"--kubeconfig={self.state_dir / 'provisioner.kubeconfig'}",
            f"--root={self.state_dir / 'volumes'}",
            f"--access-modes={','.join(self.access_modes)}",
        ], env={"PYTHONPATH": os.pathsep.join([str(HACK), os.environ.get("PYTHONPATH", "")])})

        self.apply(_storage_class())
        self._wait(self._default_service_account, deadline, "the default ServiceAccount")
        if nodes:
            self.add_nodes(nodes, deadline - time.monotonic())
        self._save(started_seconds=round(time.monotonic() - t0, 2))

    def _audit_args(self) -> list[str]:
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(json.dumps(AUDIT_POLICY))
        self.logs.mkdir(parents=True, exist_ok=True)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.logs / 'audit.jsonl'}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # a write is in the log before its answer
        ]

    def writes(self, since: float = 0.0, user: str = "", namespace: str = "") -> list[dict]:
        """Write requests the API server answered (with `audit`): each audit event whose
        request started at or after `since` (epoch seconds), from a user whose name contains
        `user`, in `namespace` (all when empty)."""
        path = self.logs / "audit.jsonl"
        out = []
        for line in path.read_text().splitlines() if path.exists() else ():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            started = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
            if (
                started >= since
                and user in event["user"].get("username", "")
                and (not namespace or ref.get("namespace") == namespace)
            ):
                out.append(event)
        return out

    def stop(self) -> None:
        """Stops every component (reverse start order) and removes a temp state dir."""
        path = self.state_dir / "cluster.json"
        if not path.exists():
            return
        pids = json.loads(path.read_text()).get("pids", {})
        for name, pid in reversed(list(pids.items())):
            terminate([pid], grace=10.0)
        self._save(pids={})
        if self._owned_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # ---------------------------------------------------------------- using it
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        """Runs kubectl against this cluster; raises with its stderr when check and it failed."""
        argv = [tool("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def apply(self, *objects: dict, namespace: str | None = None) -> None:
        docs = "\n---\n".join(json.dumps(o) for o in objects)
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", "--server-side", "--field-manager=localkube", *ns, "-f", "-",
                     input=docs)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def add_nodes(self, nodes: list[NodeSpec], timeout: float = 60) -> None:
        """Creates kwok nodes (status included, as kwok expects) and waits until all are Ready."""
        docs = "\n---\n".join(json.dumps(n.manifest()) for n in nodes)
        self.kubectl("create", "-f", "-", input=docs)
        names = [n.name for n in nodes]
        self._wait(lambda: self._nodes_ready(names), time.monotonic() + timeout, "nodes Ready")

    def start_agent(self, spec: NodeAgentSpec | None = None, timeout: float = 60) -> str:
        """Starts the local node agent (a tiny kubelet: pods bound to its node run as local
        processes) with a `system:node:<name>` identity; waits until its node is Ready and
        returns the node name. Its pods live under <state_dir>/agents/<name>; its log is
        logs/nodeagent-<name>.log. Stopped with the cluster."""
        spec = spec or NodeAgentSpec()
        creds = pki.node_credentials(self.pki, spec.name)
        kubeconfig = self.state_dir / f"node-{spec.name}.kubeconfig"
        kubeconfig.write_text(pki.kubeconfig(self.pki, self.server, creds["client"].name))
        state = self.state_dir / "agents" / spec.name
        state.mkdir(parents=True, exist_ok=True)
        self._spawn(f"nodeagent-{spec.name}", [
            sys.executable, "-m", "localkube.nodeagent",
            f"--kubeconfig={kubeconfig}",
            f"--state-dir={state}",
            f"--serving-cert={creds['serving']}.crt",
            f"--serving-key={creds['serving']}.key",
            f"--client-ca={self.pki / 'ca.crt'}",
            *spec.argv(),
        ], env={"PYTHONPATH": os.pathsep.join([str(HACK), os.environ.get("PYTHONPATH", "")])})
        self._wait(lambda: self._nodes_ready([spec.name]), time.monotonic() + timeout,
                   f"node {spec.name} Ready")
        return spec.name

    def start_object_store(self, bucket: str = "tauon", timeout: float = 60):
        """Starts SeaweedFS's S3 gateway on loopback (localkube.objectstore) as a process of
        this cluster, stopped with it; returns the ObjectStore (endpoint, bucket, keys)."""
        from localkube.objectstore import ObjectStore

        store = ObjectStore.start(self.state_dir, bucket=bucket, timeout=timeout,
                                  spawn=self._spawn)
        self._save(objectStore=store.info())
        self.object_store = store
        return store

    def kubeconfig_for(self, identity: str) -> Path:
        return self.state_dir / f"{identity}.kubeconfig"

    def ssl_context(self, identity: str = "admin") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(self.pki / f"{identity}.crt", self.pki / f"{identity}.key")
        return ctx

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each component, from /proc (Linux)."""
        out = {}
        for name, pid in self.info.get("pids", {}).items():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) * 1024
            except OSError:
                pass
        return out

    # ---------------------------------------------------------------- probes
    def _wait(self, check, deadline: float, what: str) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as e:  # noqa: BLE001 - report the last error on timeout
                last_error = e
            self._check_alive()
            time.sleep(0.25)
        raise ClusterError(f"timed out waiting for {what} (last error: {last_error}); "
                           f"logs in {self.logs}")

    def check_alive(self) -> None:
        """Raises ClusterError, with the log's tail, if a component has exited."""
        self._check_alive()

    def _check_alive(self) -> None:
        for name, pid in self.info.get("pids", {}).items():
            if not alive(pid):
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} exited early; last log lines:\n{tail}")

    def _apiserver_ready(self) -> bool:
        return http_ok(f"{self.server}/readyz", self.ssl_context())

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default",
                            check=False).returncode == 0

    def _nodes_ready(self, names: list[str]) -> bool:
        items = self.get_json("nodes")["items"]
        ready = {
            n["metadata"]["name"]
            for n in items
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        }
        return set(names) <= ready


# Every write, at Metadata level (who, verb, object; no bodies), once it is answered.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


def _storage_class() -> dict:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
