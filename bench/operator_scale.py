"""How the operator scales: N TrainingJobs (1 worker x 1 GPU each) on simulated GPU nodes.

    python bench/operator_scale.py [--jobs 1000] [--nodes 125] [--gpus 8]
                                   [--baseline bare,children|bare|none] [--peer training-operator]
                                   [--no-store] [--keep] [--state-dir DIR]

Prints figures; it asserts nothing (exit 0 unless the cluster itself fails). One run, one
control plane (hack/localkube: etcd, kube-apiserver, controller-manager, scheduler, kwok, the
volume provisioner), one node pool of `--nodes` x `--gpus` GPUs per phase, phases in this order:

  bare      N bare Indexed Jobs (1 pod, 1 GPU, the trainer's requests), created directly:
            what Kubernetes alone needs to get N pods scheduled. The denominator of the ratio.
  children  the exact object set the operator would build for N TrainingJobs (ServiceAccount,
            Role, RoleBinding, ConfigMap, headless Service, Indexed Job; with --no-store an
            output PVC too, which must be provisioned and bound before its pod can be
            scheduled), created directly by this script: the cost of the object graph itself,
            without the operator.
  peer      (--peer training-operator) N PyTorchJobs (1 master, the trainer's requests) and
            Kubeflow's training-operator v1.8.1 (Go, controller-runtime; bench/peer_training_operator.py)
            building their pods and Services: what a user would run instead. Stopped after its phase.
  operator  N TrainingJobs, created as fast as the API server takes them; the operator (its own
            process, `python -m tauon_operator run`) builds the children.

The last line is one JSON object: per side, all-scheduled time, create -> pod p50/p99, API
requests per job, the controller's peak RSS and CPU seconds; `ratioVsPeer` is the operator's
all-scheduled time over the peer's (and `ratioVsBare`, `ratioVsChildren` over the baselines').

Each phase has its own namespace and its own nodes (baseline pools are tainted, their pods
tolerate it and select their pool), so every GPU of a pool is used exactly once. The baselines
stay in place, so the operator phase runs last, in the fullest cluster (pessimistic for it).

What is measured, per phase, from the first create:
  - time until every pod exists and is scheduled (spec.nodeName set), and until every unit is
    Running (a TrainingJob's status.phase; a baseline pod's phase);
  - per resource: create -> Job exists, create -> pod scheduled, p50/p90/p99/max. Two sources:
    this script's watch streams (receipt time, ms) and the objects' own timestamps
    (creationTimestamp / PodScheduled lastTransitionTime minus the parent's creationTimestamp,
    1 s resolution);
  - API requests made by the operator, counted by the API server itself: the operator runs as
    its own ServiceAccount, and one FlowSchema per verb matches only that identity (priority
    level `exempt`, so nothing is throttled); apiserver_flowcontrol_dispatched_requests_total
    per FlowSchema before/after is the operator's request count by verb (watches included;
    every request the operator makes, kopf's own included). The operator's own
    tauon_api_writes_total{verb,kind} gives the writes by kind;
  - operator RSS: peak (VmHWM) and current (VmRSS) from /proc; reconciles per resource and
    reconcile time from its /metrics;
  - CPU seconds of every component during the phase (from /proc), to see what limits scale.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in ("hack", "operator", "runtime"):
    if str(REPO / _p) not in sys.path:
        sys.path.insert(0, str(REPO / _p))

from localkube import Cluster, NodeSpec  # noqa: E402
from localkube.cluster import ClusterError, build_binaries  # noqa: E402
from localkube.kubeapi import ApiError, KubeApi  # noqa: E402
from localkube.procutil import free_port, wait_for_url  # noqa: E402

import localplatform  # noqa: E402

import peer_training_operator as peer_to  # noqa: E402 - bench/, beside this script

GROUP_VERSION = "tauon.dev/v1alpha1"
NS_PREFIX = "bench"
POOL_LABEL = "tauon.dev/bench-pool"
UNIT_LABEL = "tauon.dev/trainingjob"  # the operator's parent label; baselines carry it too
OPERATOR_SA = ("default", "tauon-bench-operator")
PEER_SA = ("default", "tauon-bench-peer")
PEER_VERSION = peer_to.VERSION
OPERATOR_FLOWS, PEER_FLOWS = "tauon-bench-op-", "tauon-bench-peer-"  # FlowSchema name prefixes
VERBS = ("create", "patch", "update", "delete", "get", "list", "watch")
MIB = 1024 * 1024
CLK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the API, directly
def admin_api(cluster: Cluster) -> KubeApi:
    """The API server as admin: one keep-alive connection per thread, transient errors retried."""
    return KubeApi(cluster.kubeconfig, keepalive=True, retries=4, timeout=60)


def get_or_empty(api: KubeApi, path: str, **params) -> dict:
    """A GET that answers {} where the API server refuses (the object is not there yet)."""
    try:
        return api.get(path, **params) or {}
    except ApiError:
        return {}


def collection(api_version: str, plural: str, namespace: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


PLURAL = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings",
          "ConfigMap": "configmaps", "Service": "services", "PersistentVolumeClaim":
          "persistentvolumeclaims", "Job": "jobs", "TrainingJob": "trainingjobs",
          "PyTorchJob": "pytorchjobs"}


def path_for(obj: dict, namespace: str) -> str:
    return collection(obj["apiVersion"], PLURAL[obj["kind"]], namespace)


# ---------------------------------------------------------------------- watching
class Watch(threading.Thread):
    """list + watch of one collection; calls on_event(type, obj, receipt_time) per event."""

    def __init__(self, api: KubeApi, path: str, on_event):
        super().__init__(daemon=True, name=f"watch {path}")
        self.api, self.path, self.on_event = api, path, on_event
        self._stop = threading.Event()
        self._stream = None
        self.events = 0

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()

    def run(self) -> None:
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    try:
                        listing = self.api.get(self.path)
                    except ApiError:
                        time.sleep(1)
                        continue
                    now = time.time()
                    for item in listing.get("items") or []:
                        self.on_event("ADDED", item, now)
                    rv = listing["metadata"]["resourceVersion"]
                self._stream = self.api.watch(self.path, {"timeoutSeconds": 1800,
                                                          "resourceVersion": rv}, timeout=None)
                try:
                    for ev in self._stream:
                        if self._stop.is_set():
                            break
                        now = time.time()
                        obj = ev.get("object") or {}
                        if ev["type"] == "ERROR":
                            rv = None  # 410 Gone: list again
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev["type"] != "BOOKMARK":
                            self.events += 1
                            self.on_event(ev["type"], obj, now)
                except ApiError:
                    rv = None
                    time.sleep(1)
            except Exception as e:  # noqa: BLE001 - a watch reconnects, it does not end the run
                if self._stop.is_set():
                    return
                log(f"watch {self.path}: {type(e).__name__}: {e}; reconnecting")
                time.sleep(1)


def parse_ts(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Tracker:
    """First-seen times per unit (a TrainingJob, or its baseline stand-in), from the watches."""

    def __init__(self, names: list[str], running_from: str):
        self.names = set(names)
        self.running_from = running_from  # "TrainingJob" (status.phase) or "Pod" (pod phase)
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}
        self.job: dict[str, float] = {}
        self.pod: dict[str, float] = {}
        self.scheduled: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.tj_modified = 0  # TrainingJob MODIFIED events: writes that changed something

    @staticmethod
    def _first(d: dict, key: str, t: float) -> None:
        if key not in d:
            d[key] = t

    def on_job(self, type_: str, obj: dict, t: float) -> None:
        unit = (obj["metadata"].get("labels") or {}).get(UNIT_LABEL)
        if unit in self.names and type_ != "DELETED":
            with self.lock:
                self._first(self.job, unit, t)

    def on_pod(self, type_: str, obj: dict, t: float) -> None:
        unit = (obj["metadata"].get("labels") or {}).get(UNIT_LABEL)
        if unit not in self.names or type_ == "DELETED":
            return
        with self.lock:
            self._first(self.pod, unit, t)
            if obj.get("spec", {}).get("nodeName"):
                self._first(self.scheduled, unit, t)
            if self.running_from == "Pod" and obj.get("status", {}).get("phase") == "Running":
                self._first(self.running, unit, t)

    def on_trainingjob(self, type_: str, obj: dict, t: float) -> None:
        name = obj["metadata"]["name"]
        if name not in self.names:
            return
        with self.lock:
            self.tj_modified += type_ == "MODIFIED"
            if (obj.get("status") or {}).get("phase") == "Running":
                self._first(self.running, name, t)

    def counts(self) -> tuple[int, int, int, int, int]:
        with self.lock:
            return (len(self.created), len(self.job), len(self.pod), len(self.scheduled),
                    len(self.running))


# ---------------------------------------------------------------------- processes and metrics
def proc_status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_by_component(cluster: Cluster) -> dict[str, float]:
    out = {name: cpu_seconds(pid) for name, pid in cluster.info.get("pids", {}).items()}
    t = os.times()
    out["this script"] = t.user + t.system
    return out


_METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if m:
            try:
                out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
            except ValueError:
                pass
    return out


def metric_sum(samples, name: str, **labels) -> float:
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == w for k, w in labels.items()))


def operator_flows(api: KubeApi, prefix: str = OPERATOR_FLOWS) -> dict[str, float]:
    """A controller's dispatched requests per FlowSchema (one per verb, named `prefix` + verb),
    from the API server."""
    try:
        text = api.get_text("/metrics")
    except ApiError:
        return {}
    out: dict[str, float] = {}
    total_all = 0.0
    for n, lab, v in parse_metrics(text):
        if n == "apiserver_flowcontrol_dispatched_requests_total":
            total_all += v
            fs = lab.get("flow_schema", "")
            if fs.startswith(prefix):
                out[fs.removeprefix(prefix)] = out.get(fs.removeprefix(prefix), 0) + v
    out["__all_clients__"] = total_all
    return out


def scrape(url: str) -> list[tuple[str, dict, float]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return parse_metrics(r.read().decode())
    except OSError:
        return []


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def dist(values: list[float], unit: str = "s") -> str:
    if not values:
        return "n/a"
    return (f"p50 {pct(values, 50):.2f}{unit}  p90 {pct(values, 90):.2f}{unit}  "
            f"p99 {pct(values, 99):.2f}{unit}  max {max(values):.2f}{unit}  (n={len(values)})")


def dist_int(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50 {pct(values, 50):.0f}s  p90 {pct(values, 90):.0f}s  p99 {pct(values, 99):.0f}s  "
            f"max {max(values):.0f}s  (n={len(values)})")


# ---------------------------------------------------------------------- the cluster
def pool_nodes(pool: str, count: int, gpus: int, taint: bool) -> list[NodeSpec]:
    taints = ({"key": POOL_LABEL, "value": pool, "effect": "NoSchedule"},) if taint else ()
    return [NodeSpec(name=f"{pool}-node-{i}", gpus=gpus, labels={POOL_LABEL: pool}, taints=taints)
            for i in range(count)]


def place_on_pool(pod_spec: dict, pool: str) -> None:
    pod_spec["nodeSelector"] = {POOL_LABEL: pool}
    pod_spec["tolerations"] = [{"key": POOL_LABEL, "operator": "Equal", "value": pool,
                                "effect": "NoSchedule"}]


def wait(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")


def create_namespace(api: KubeApi, name: str) -> None:
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": name}})
    wait(lambda: get_or_empty(api, f"/api/v1/namespaces/{name}/serviceaccounts/default"),
         60, f"the default ServiceAccount in {name}")


def install_crds(cluster: Cluster) -> None:
    files = sorted((REPO / "crds").glob("*.yaml"))
    for f in files:
        cluster.kubectl("apply", "--server-side", "-f", str(f))
    for f in files:
        name = re.search(r"^  name: (\S+)", f.read_text(), re.M).group(1)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=120s")


def operator_identity(cluster: Cluster, identity: tuple[str, str] = OPERATOR_SA,
                      prefix: str = OPERATOR_FLOWS, precedence: int = 100) -> Path:
    """A ServiceAccount of its own (cluster-admin: this measures speed, not RBAC) and one
    FlowSchema per verb matching only it, so the API server counts its requests by verb."""
    ns, sa = identity
    cluster.kubectl("create", "serviceaccount", sa, "-n", ns)
    cluster.kubectl("create", "clusterrolebinding", sa, "--clusterrole=cluster-admin",
                    f"--serviceaccount={ns}:{sa}")
    token = cluster.kubectl("create", "token", sa, "-n", ns, "--duration=48h").stdout.strip()
    subject = [{"kind": "ServiceAccount", "serviceAccount": {"name": sa, "namespace": ns}}]

    def schema(name: str, precedence: int, verbs: list[str], non_resource: bool) -> dict:
        rule = {"subjects": subject, "resourceRules": [{
            "verbs": verbs, "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"],
            "clusterScope": True}]}
        if non_resource:
            rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        return {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
                "metadata": {"name": f"{prefix}{name}"},
                "spec": {"matchingPrecedence": precedence,
                         "priorityLevelConfiguration": {"name": "exempt"}, "rules": [rule]}}

    schemas = [schema(v, precedence + i, [v], False) for i, v in enumerate(VERBS)]
    schemas.append(schema("other", precedence + 90, ["*"], True))
    cluster.apply(*schemas)
    kubeconfig = cluster.state_dir / f"{sa}.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.server, "certificate-authority": str(cluster.pki / "ca.crt")}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "local", "user": sa}}],
        "current-context": "bench",
    }))
    return kubeconfig


def start_operator(cluster: Cluster, kubeconfig: Path, argv: list[str]) -> tuple[int, str]:
    port = free_port()
    env = {
        "KUBECONFIG": str(kubeconfig),
        "TAUON_METRICS_PORT": str(port),
        "TAUON_HEALTH_PORT": "0",
        "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("operator", "runtime", "hack")),
        "PYTHONUNBUFFERED": "1",
        **localplatform.store_settings(cluster),  # none without --store
    }
    # Spawned through the cluster, so stopping the cluster stops it too.
    proc = cluster._spawn("tauon-operator", argv, env)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for_url(url, 120, proc=proc, interval=0.5)
    except ChildProcessError:
        tail = (cluster.logs / "tauon-operator.log").read_text(errors="replace")[-3000:]
        raise ClusterError(f"the operator exited ({proc.returncode}):\n{tail}") from None
    except TimeoutError:
        raise ClusterError("timed out after 120s waiting for the operator's /metrics") from None
    return proc.pid, url


def ready_dataset(cluster: Cluster, api: KubeApi, ns: str) -> float:
    t0 = time.monotonic()
    api.create(collection(GROUP_VERSION, "datasets", ns), {
        "apiVersion": GROUP_VERSION, "kind": "Dataset", "metadata": {"name": "digits"},
        "spec": {"source": {"builtin": {"name": "digits"}}}})

    def running_pod():
        pods = get_or_empty(api, f"/api/v1/namespaces/{ns}/pods", labelSelector="tauon.dev/dataset=digits")
        live = [p["metadata"]["name"] for p in pods.get("items", [])
                if p["status"].get("phase") == "Running"]
        return live[0] if live else None
    pod = wait(running_pod, 180, "the Dataset's prepare pod Running")
    cluster.kubectl("annotate", "pod", pod, "-n", ns, "sim.tauon.dev/exit-code=0")

    def ready():
        ds = get_or_empty(api, collection(GROUP_VERSION, "datasets", ns) + "/digits")
        return (ds.get("status") or {}).get("phase") == "Ready"
    wait(ready, 180, "Dataset digits Ready")
    return time.monotonic() - t0


# ---------------------------------------------------------------------- what each phase creates
def trainingjob(name: str) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"},
                     "resources": {"gpus": 1}}}


def operator_children(name: str, ns: str, store: dict[str, str] | None = None) -> list[dict]:
    """What the operator builds for trainingjob(name) (its own pure builder, with the operator's
    store settings), made ownerless (no parent exists) and unmanaged (the operator's watches
    must not see them)."""
    from tauon_operator.builders import trainingjob as build
    from tauon_operator.settings import Settings

    tj = {**trainingjob(name), "metadata": {"name": name, "namespace": ns,
                                            "uid": "00000000-0000-0000-0000-000000000000"}}
    children = build.build(tj, Settings.from_env(store or {}), 0)
    for child in children:
        meta = child["metadata"]
        meta.pop("ownerReferences", None)
        meta.pop("namespace", None)
        meta["labels"]["app.kubernetes.io/managed-by"] = "tauon-bench"
        if child["kind"] == "Job":
            child["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "tauon-bench"
            place_on_pool(child["spec"]["template"]["spec"], "children")
    return children


def bare_job(name: str, resources: dict, image: str) -> dict:
    labels = {UNIT_LABEL: name}
    pod_spec = {"restartPolicy": "Never", "containers": [{
        "name": "trainer", "image": image, "command": ["tauon-runtime"], "args": ["train"],
        "resources": resources}]}
    place_on_pool(pod_spec, "bare")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"completionMode": "Indexed", "completions": 1, "parallelism": 1,
                     "backoffLimit": 0,
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}


# ---------------------------------------------------------------------- one phase
class Phase:
    def __init__(self, key: str, title: str, ns: str, names: list[str],
                 objects_of, running_from: str):
        self.key, self.title, self.ns, self.names = key, title, ns, names
        self.objects_of = objects_of  # name -> list of objects, created in order
        self.tracker = Tracker(names, running_from)
        self.result: dict = {}


def run_phase(phase: Phase, cluster: Cluster, api: KubeApi, args, op: dict | None) -> dict:
    ns, tr, n = phase.ns, phase.tracker, len(phase.names)
    watches = [Watch(api, collection("batch/v1", "jobs", ns), tr.on_job),
               Watch(api, collection("v1", "pods", ns), tr.on_pod)]
    if tr.running_from == "TrainingJob":
        watches.append(Watch(api, collection(GROUP_VERSION, "trainingjobs", ns), tr.on_trainingjob))
    for w in watches:
        w.start()
    time.sleep(1.0)  # the watches are open before the first create

    prefix = op["flows"] if op else OPERATOR_FLOWS
    flows0 = operator_flows(api, prefix)
    cpu0 = cpu_by_component(cluster)
    om0 = scrape(op["url"]) if op else []
    if op:
        with open(cluster.logs / f"{op['name']}.log", "rb") as f:
            op["log_lines0"] = sum(1 for _ in f)
    rss_max = [0]

    log(f"{phase.key}: creating {n} units ({args.create_workers} parallel POSTs)")
    t0 = time.time()
    errors: list[str] = []

    def create(name: str) -> None:
        try:
            for obj in phase.objects_of(name):
                api.create(path_for(obj, ns), obj)
                if name not in tr.created:
                    with tr.lock:
                        tr.created[name] = time.time()
        except Exception as e:  # noqa: BLE001 - counted and shown, the run goes on
            errors.append(f"{name}: {e}")

    created_at = None
    with ThreadPoolExecutor(args.create_workers) as pool:
        futures = [pool.submit(create, name) for name in phase.names]
        deadline = time.monotonic() + args.phase_timeout
        last_print = 0.0
        while True:
            c, j, p, s, r = tr.counts()
            if created_at is None and all(f.done() for f in futures):
                created_at = time.time()
            if op:
                rss_max[0] = max(rss_max[0], proc_status(op["pid"]).get("VmRSS", 0))
            done = created_at is not None and s >= n and r >= n
            if done or time.monotonic() > deadline or (created_at and len(errors) >= n):
                break
            if time.monotonic() - last_print >= args.progress:
                last_print = time.monotonic()
                extra = (f" | operator RSS {rss_max[0] / MIB:.0f} MiB" if op else "")
                log(f"{phase.key}: t={time.time() - t0:6.1f}s created {c}/{n} jobs {j} pods {p} "
                    f"scheduled {s} running {r}{extra}")
            time.sleep(0.2)
    if errors:
        log(f"{phase.key}: {len(errors)} creation errors, first: {errors[0][:300]}")
    c, j, p, s, r = tr.counts()
    log(f"{phase.key}: t={time.time() - t0:6.1f}s created {c}/{n} jobs {j} pods {p} "
        f"scheduled {s} running {r}")
    if op:  # trailing writes (status) land in the counts: wait until the operator is idle
        quiet_since, last = time.monotonic(), None
        end = time.monotonic() + 60
        while time.monotonic() < end and time.monotonic() - quiet_since < 5:
            now = (metric_sum(scrape(op["url"]), op["reconciles"]),
                   sum(v for k, v in operator_flows(api, prefix).items() if k != "__all_clients__"))
            if now != last:
                last, quiet_since = now, time.monotonic()
            time.sleep(1)
    t_end = time.time()
    cpu1 = cpu_by_component(cluster)
    flows1 = operator_flows(api, prefix)
    om1 = scrape(op["url"]) if op else []
    for w in watches:
        w.stop()

    # The objects' own timestamps (1 s resolution), from one final listing.
    server_job, server_sched = [], []
    parents = get_or_empty(api, collection(GROUP_VERSION, "trainingjobs", ns)
                           if tr.running_from == "TrainingJob" else collection("batch/v1", "jobs", ns))
    born = {}
    for o in parents.get("items", []):
        unit = o["metadata"]["name"] if tr.running_from == "TrainingJob" else \
            (o["metadata"].get("labels") or {}).get(UNIT_LABEL)
        born[unit] = parse_ts(o["metadata"]["creationTimestamp"])
    if tr.running_from == "TrainingJob":
        jobs = get_or_empty(api, collection("batch/v1", "jobs", ns))
        for o in jobs.get("items", []):
            unit = (o["metadata"].get("labels") or {}).get(UNIT_LABEL)
            if unit in born:
                server_job.append(parse_ts(o["metadata"]["creationTimestamp"]) - born[unit])
    pods = get_or_empty(api, collection("v1", "pods", ns))
    for o in pods.get("items", []):
        unit = (o["metadata"].get("labels") or {}).get(UNIT_LABEL)
        cond = next((x for x in o.get("status", {}).get("conditions") or []
                     if x["type"] == "PodScheduled" and x["status"] == "True"), None)
        if unit in born and cond:
            server_sched.append(parse_ts(cond["lastTransitionTime"]) - born[unit])

    events = get_or_empty(api, f"/api/v1/namespaces/{ns}/events")
    op_events: dict[str, int] = {}
    for e in events.get("items", []):
        if e.get("involvedObject", {}).get("kind") in ("TrainingJob", "Dataset"):
            key = f"{e.get('type')} {e.get('reason')}"
            op_events[key] = op_events.get(key, 0) + int(e.get("count") or 1)

    with tr.lock:
        created = dict(tr.created)
        res = {
            "n": n, "errors": len(errors),
            "created": len(created),
            "create_seconds": (max(created.values()) - t0) if created else None,
            "all_scheduled": (max(tr.scheduled.values()) - t0) if len(tr.scheduled) >= n else None,
            "all_running": (max(tr.running.values()) - t0) if len(tr.running) >= n else None,
            "scheduled": len(tr.scheduled), "running": len(tr.running), "jobs": len(tr.job),
            "pods": len(tr.pod),
            "to_job": [tr.job[k] - created[k] for k in tr.job if k in created],
            "to_pod": [tr.pod[k] - created[k] for k in tr.pod if k in created],
            "to_scheduled": [tr.scheduled[k] - created[k] for k in tr.scheduled if k in created],
            "to_running": [tr.running[k] - created[k] for k in tr.running if k in created],
            "server_to_job": server_job, "server_to_scheduled": server_sched,
            "wall": t_end - t0,
            "cpu": {k: cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu1},
            "flows": {k: flows1.get(k, 0) - flows0.get(k, 0) for k in flows1},
            "watch_events": sum(w.events for w in watches),
            "tj_modified": tr.tj_modified, "events": op_events,
        }
    if op:
        res["controller"] = op["name"]
        st = proc_status(op["pid"])
        res["rss"] = {"hwm": st.get("VmHWM", 0), "now": st.get("VmRSS", 0), "max_seen": rss_max[0]}
        try:
            with open(cluster.logs / f"{op['name']}.log", "rb") as f:
                res["log_lines"] = sum(1 for _ in f) - op.get("log_lines0", 0)
        except OSError:
            res["log_lines"] = None

        def delta(name, **lab):
            return metric_sum(om1, name, **lab) - metric_sum(om0, name, **lab)
        if op["name"] == "training-operator":  # controller-runtime's own metrics
            ctl = {"controller": "pytorchjob-controller"}
            total = delta("controller_runtime_reconcile_total", **ctl)
            errors_ = delta("controller_runtime_reconcile_total", result="error", **ctl)
            res["reconciles"] = {"success": total - errors_, "error": errors_}
            res["reconcile_seconds"] = (delta("controller_runtime_reconcile_time_seconds_sum", **ctl),
                                        delta("controller_runtime_reconcile_time_seconds_count", **ctl))
            res["writes"] = {}
            phase.result = res
            return res
        res["reconciles"] = {r_: delta("tauon_reconcile_total", kind="TrainingJob", result=r_)
                             for r_ in ("success", "error")}
        res["reconcile_seconds"] = (delta("tauon_reconcile_duration_seconds_sum", kind="TrainingJob"),
                                    delta("tauon_reconcile_duration_seconds_count", kind="TrainingJob"))
        writes: dict[tuple[str, str], float] = {}
        for name, lab, _ in om1:
            if name == "tauon_api_writes_total":
                key = (lab.get("verb", "?"), lab.get("kind", "?"))
                writes[key] = delta("tauon_api_writes_total", verb=key[0], kind=key[1])
        res["writes"] = {k: v for k, v in writes.items() if v}
    phase.result = res
    return res


# ---------------------------------------------------------------------- printing
def report(phase: Phase, args) -> None:
    r, n = phase.result, phase.result["n"]
    print(f"\n== {phase.title} ==")
    rate = f" ({r['created'] / r['create_seconds']:.0f}/s)" if r["create_seconds"] else ""
    print(f"created               : {r['created']}/{n} in {r['create_seconds'] or 0:.1f} s{rate}, "
          f"{args.create_workers} parallel POSTs" + (f", {r['errors']} errors" if r["errors"] else ""))
    fmt = lambda v, k: f"{v:.1f} s" if v is not None else f"not reached ({r[k]}/{n})"  # noqa: E731
    print(f"all pods scheduled    : {fmt(r['all_scheduled'], 'scheduled')} after the first create")
    what = "TrainingJob phase Running" if phase.tracker.running_from == "TrainingJob" else "pod phase Running"
    print(f"all {what:<18}: {fmt(r['all_running'], 'running')}")
    print("per resource, from its own create (watch receipt times):")
    if phase.tracker.running_from == "TrainingJob" or phase.key == "children":
        print(f"  -> Job exists       : {dist(r['to_job'])}")
    print(f"  -> pod exists       : {dist(r['to_pod'])}")
    print(f"  -> pod scheduled    : {dist(r['to_scheduled'])}")
    print(f"  -> Running          : {dist(r['to_running'])}")
    print("per resource, from the objects' timestamps (1 s resolution):")
    if r["server_to_job"]:
        print(f"  -> Job created      : {dist_int(r['server_to_job'])}")
    print(f"  -> pod scheduled    : {dist_int(r['server_to_scheduled'])}")
    flows = r["flows"]
    all_clients = flows.pop("__all_clients__", 0)
    op_total = sum(flows.values())
    if "rss" in r and phase.key == "peer":
        by_verb = ", ".join(f"{v} {flows.get(v, 0):.0f}" for v in (*VERBS, "other") if flows.get(v))
        print(f"API requests, peer    : {op_total:.0f} = {op_total / n:.2f} per PyTorchJob "
              f"(server-side, per-verb FlowSchemas: {by_verb})")
        rec = r["reconciles"]
        secs, count = r["reconcile_seconds"]
        print(f"reconciles            : {rec['success'] + rec['error']:.0f} PyTorchJob reconciles = "
              f"{(rec['success'] + rec['error']) / n:.2f} per resource ({rec['error']:.0f} errors), "
              f"mean {1000 * secs / count if count else 0:.1f} ms each")
        rss = r["rss"]
        print(f"peer RSS              : peak (VmHWM) {rss['hwm'] / MIB:.0f} MiB, now {rss['now'] / MIB:.0f} MiB")
    elif "rss" in r:
        by_verb = ", ".join(f"{v} {flows.get(v, 0):.0f}" for v in (*VERBS, "other") if flows.get(v))
        print(f"API requests, operator: {op_total:.0f} = {op_total / n:.2f} per TrainingJob "
              f"(server-side, per-verb FlowSchemas: {by_verb})")
        writes = r["writes"]
        per = ", ".join(f"{verb} {kind} {v / n:.2f}" for (verb, kind), v in sorted(writes.items()))
        print(f"  writes per TJ (operator's tauon_api_writes_total): "
              f"{sum(writes.values()) / n:.2f} = {per}")
        status_writes = sum(v for (verb, kind), v in writes.items()
                            if verb == "status" and kind == "TrainingJob")
        print(f"  status patches      : {status_writes:.0f}, of which changed the object "
              f"{r['tj_modified']} (TrainingJob MODIFIED events seen), no-op "
              f"{max(0, status_writes - r['tj_modified']):.0f}")
        if r["events"]:
            print("  Events on TrainingJobs: " + ", ".join(
                f"{k} {v}" for k, v in sorted(r["events"].items(), key=lambda kv: -kv[1])))
        rec = r["reconciles"]
        secs, count = r["reconcile_seconds"]
        print(f"reconciles            : {rec['success'] + rec['error']:.0f} TrainingJob reconciles = "
              f"{(rec['success'] + rec['error']) / n:.2f} per resource ({rec['error']:.0f} errors), "
              f"mean {1000 * secs / count if count else 0:.1f} ms each")
        rss = r["rss"]
        print(f"operator RSS          : peak (VmHWM) {rss['hwm'] / MIB:.0f} MiB, now {rss['now'] / MIB:.0f} MiB"
              + (f"; {r['log_lines']} log lines in the phase" if r.get("log_lines") is not None else ""))
    else:
        print(f"operator, idle        : {op_total:.0f} API requests; "
              f"{r['cpu'].get('tauon-operator', 0):.1f} CPU-s spent on watch events of objects "
              f"that are not its own (kopf filters labels client-side)")
    print(f"API requests, all     : {all_clients:.0f} dispatched by the API server in this phase "
          f"(every client: kube components, kwok, this script)")
    wall = r["wall"]
    cpu = sorted(r["cpu"].items(), key=lambda kv: -kv[1])
    total_cpu = sum(v for _, v in cpu)
    print(f"CPU during the phase  : {total_cpu:.0f} CPU-s over {wall:.0f} s wall "
          f"= {total_cpu / wall:.2f} of {os.cpu_count()} cores busy: "
          + ", ".join(f"{k} {v:.0f}" for k, v in cpu if v >= 0.5))


def summary(phases: dict[str, Phase], setup: dict, args) -> None:
    print("\n== summary ==")
    print(f"cluster start         : {setup['start']:.0f} s ({setup['nodes']} kwok nodes), "
          f"operator up + Dataset Ready {setup['dataset']:.0f} s")
    op = phases.get("operator")
    if op and op.result:
        r = op.result
        for key in ("bare", "children"):
            b = phases.get(key)
            if not (b and b.result):
                continue
            for what, label in (("all_scheduled", "all pods scheduled"),):
                if r[what] and b.result[what]:
                    print(f"ratio {label:<16}: operator {r[what]:.1f} s / {key} {b.result[what]:.1f} s "
                          f"= {r[what] / b.result[what]:.2f}x")
            if r["to_scheduled"] and b.result["to_scheduled"]:
                print(f"ratio p50 to scheduled: operator {pct(r['to_scheduled'], 50):.2f} s / {key} "
                      f"{pct(b.result['to_scheduled'], 50):.2f} s = "
                      f"{pct(r['to_scheduled'], 50) / max(pct(b.result['to_scheduled'], 50), 1e-3):.2f}x")
    figures = {key: side_figures(ph.result) for key, ph in phases.items() if ph.result}
    peer = figures.get("peer")
    if peer and peer.get("rssPeakMiB"):
        print("\n== side by side: the operator and training-operator " + PEER_VERSION + " ==")
        ours = figures.get("operator", {})
        rows = (("all pods scheduled (s)", "allScheduledSeconds", "{:.1f}"),
                ("create -> pod p50 (s)", "toPodP50", "{:.2f}"),
                ("create -> pod p99 (s)", "toPodP99", "{:.2f}"),
                ("create -> scheduled p50 (s)", "toScheduledP50", "{:.2f}"),
                ("API requests per job", "apiRequestsPerJob", "{:.2f}"),
                ("controller peak RSS (MiB)", "rssPeakMiB", "{:.0f}"),
                ("controller CPU-s", "cpuSeconds", "{:.1f}"))
        print(f"{'':28}{'operator':>12}{'peer':>12}{'ratio':>9}")
        for label, key, f in rows:
            a, b = ours.get(key), peer.get(key)
            cell = lambda v, f=f: f.format(v) if v is not None else "n/a"  # noqa: E731
            ratio = f"{a / b:.2f}x" if a is not None and b else "n/a"
            print(f"{label:28}{cell(a):>12}{cell(b):>12}{ratio:>9}")
    ours_t = figures.get("operator", {}).get("allScheduledSeconds")

    def ratio(other: str) -> float | None:
        theirs = figures.get(other, {}).get("allScheduledSeconds")
        return round(ours_t / theirs, 3) if ours_t and theirs else None
    line = {"bench": "operator_scale", "jobs": args.jobs, "nodes": args.nodes, "gpus": args.gpus,
            "peer": args.peer, "store": args.store, "ratioVsPeer": ratio("peer"),
            "ratioVsBare": ratio("bare"),
            "ratioVsChildren": ratio("children"), "load1": round(os.getloadavg()[0], 2),
            "sides": figures}
    print(json.dumps(line))


def side_figures(r: dict) -> dict:
    """One phase's figures for the JSON line."""
    flows = {k: v for k, v in r["flows"].items() if k != "__all_clients__"}
    out = {"allScheduledSeconds": round(r["all_scheduled"], 2) if r["all_scheduled"] else None,
           "toPodP50": round(pct(r["to_pod"], 50), 3) if r["to_pod"] else None,
           "toPodP99": round(pct(r["to_pod"], 99), 3) if r["to_pod"] else None,
           "toScheduledP50": round(pct(r["to_scheduled"], 50), 3) if r["to_scheduled"] else None}
    if "rss" in r:
        controller = r["controller"]
        out |= {"apiRequestsPerJob": round(sum(flows.values()) / r["n"], 2),
                "rssPeakMiB": round(r["rss"]["hwm"] / MIB, 1),
                "cpuSeconds": round(r["cpu"].get(controller, 0), 1)}
    return out


def run_peer(cluster: Cluster, api: KubeApi, args, built: Path, phases: dict, container: dict) -> None:
    """The peer's phase: training-operator up as its own identity, N PyTorchJobs (1 master,
    the trainer's resources) on the peer pool, then training-operator stopped, so that the
    operator's phase runs without it (and it without the operator's Jobs to watch)."""
    peer_to.install(cluster, built)
    kubeconfig = operator_identity(cluster, PEER_SA, PEER_FLOWS, precedence=300)
    pid, url = peer_to.start(cluster, built, kubeconfig)
    log(f"training-operator {PEER_VERSION} pid {pid} ready, metrics {url}")
    ns = f"{NS_PREFIX}-peer"
    create_namespace(api, ns)
    pod_spec = {"containers": [{"name": "trainer", "image": container["image"],
                                "command": ["tauon-runtime"], "args": ["train"],
                                "resources": container["resources"]}]}
    place_on_pool(pod_spec, "peer")
    names = [f"ptj-{i:05d}" for i in range(args.jobs)]
    ph = Phase("peer", f"peer: {args.jobs} PyTorchJobs (1 master x 1 GPU), training-operator "
                       f"{PEER_VERSION}, {args.nodes} nodes x {args.gpus} GPUs", ns, names,
               lambda name: [peer_to.pytorchjob(name, {UNIT_LABEL: name}, pod_spec)], "Pod")
    phases["peer"] = ph
    op = {"pid": pid, "url": url, "name": "training-operator", "flows": PEER_FLOWS,
          "reconciles": "controller_runtime_reconcile_total"}
    run_phase(ph, cluster, api, args, op)
    report(ph, args)
    os.kill(pid, signal.SIGTERM)


# ---------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000, help="TrainingJobs (1 worker, 1 GPU each)")
    ap.add_argument("--nodes", type=int, default=125, help="kwok nodes per pool")
    ap.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
    ap.add_argument("--baseline", default="bare,children",
                    help="baseline phases before the operator's: bare, children, both "
                         "(default 'bare,children') or 'none'")
    ap.add_argument("--create-workers", type=int, default=8, help="parallel creates (default 8)")
    ap.add_argument("--phase-timeout", type=float, default=1200, help="seconds per phase")
    ap.add_argument("--progress", type=float, default=10, help="seconds between progress lines")
    ap.add_argument("--operator-cmd", default=f"{sys.executable} -m tauon_operator run",
                    help="the operator's command line (to compare a variant; default: this "
                         "checkout's `python -m tauon_operator run`)")
    ap.add_argument("--peer", choices=("training-operator", "none"), default="none",
                    help="a peer controller measured in the same run, before the operator: "
                         "Kubeflow's training-operator (N PyTorchJobs, 1 master each, the "
                         "trainer's resources), built by hack/build-training-operator.sh")
    ap.add_argument("--store", action=argparse.BooleanOptionalAction, default=True,
                    help="an artifact store (SeaweedFS) for the operator, as the platform has: "
                         "outputs go there and a TrainingJob has no output claim (default); "
                         "--no-store: every TrainingJob gets an output claim to bind")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    ap.add_argument("--state-dir", type=Path, help="cluster state dir (default: a temp dir)")
    args = ap.parse_args()
    baselines = [] if args.baseline == "none" else [b.strip() for b in args.baseline.split(",") if b.strip()]
    if not set(baselines) <= {"bare", "children"}:
        ap.error("--baseline: bare, children, 'bare,children' or none")
    if args.jobs > args.nodes * args.gpus:
        log(f"note: {args.jobs} GPUs asked, {args.nodes * args.gpus} per pool: some pods stay Pending")

    def on_term(*_):
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, on_term)

    from tauon_operator.builders import trainingjob as build  # noqa: F401 - fail early
    sample = next(c for c in operator_children("sample", "default") if c["kind"] == "Job")
    container = sample["spec"]["template"]["spec"]["containers"][0]

    peer_built = peer_to.build() if args.peer == "training-operator" else None
    pools = ["operator", *baselines, *(["peer"] if peer_built else [])]
    nodes = [nd for p in pools for nd in pool_nodes(p, args.nodes, args.gpus, taint=p != "operator")]
    log(f"starting the control plane with {len(nodes)} kwok nodes ({len(pools)} pools of "
        f"{args.nodes} x {args.gpus} GPUs)")
    t = time.monotonic()
    cluster = Cluster.start(state_dir=args.state_dir, nodes=nodes, bin_dir=build_binaries(),
                            timeout=600)
    setup = {"start": time.monotonic() - t, "nodes": len(nodes)}
    phases: dict[str, Phase] = {}
    try:
        if args.store:
            cluster.start_object_store()
        store = localplatform.store_settings(cluster)
        api = admin_api(cluster)
        log(f"cluster up in {setup['start']:.0f} s; CRDs, operator identity, operator, Dataset")
        t = time.monotonic()
        install_crds(cluster)
        kubeconfig = operator_identity(cluster)
        pid, url = start_operator(cluster, kubeconfig, shlex.split(args.operator_cmd))
        op = {"pid": pid, "url": url, "name": "tauon-operator", "flows": OPERATOR_FLOWS,
              "reconciles": "tauon_reconcile_total"}
        op_ns = f"{NS_PREFIX}-operator"
        create_namespace(api, op_ns)
        if args.store:
            localplatform.grant_store(cluster, op_ns)
        ready_dataset(cluster, api, op_ns)
        setup["dataset"] = time.monotonic() - t
        idle = proc_status(pid)
        log(f"operator pid {pid} idle RSS {idle.get('VmRSS', 0) / MIB:.0f} MiB, metrics {url}")

        n = args.jobs
        if "bare" in baselines:
            ns = f"{NS_PREFIX}-bare"
            create_namespace(api, ns)
            names = [f"bare-{i:05d}" for i in range(n)]
            ph = Phase("bare", f"bare: {n} Indexed Jobs (1 pod x 1 GPU), no operator, "
                               f"{args.nodes} nodes x {args.gpus} GPUs", ns, names,
                       lambda name: [bare_job(name, container["resources"], container["image"])], "Pod")
            phases["bare"] = ph
            run_phase(ph, cluster, api, args, None)
            report(ph, args)
        if "children" in baselines:
            ns = f"{NS_PREFIX}-children"
            create_namespace(api, ns)
            api.create(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "digits-data"},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
            names = [f"kid-{i:05d}" for i in range(n)]
            ph = Phase("children", f"children: the operator's {len(operator_children('x', ns, store))} objects per TrainingJob created "
                                   f"directly, no operator, {args.nodes} nodes x {args.gpus} GPUs",
                       ns, names, lambda name, ns=ns: operator_children(name, ns, store), "Pod")
            phases["children"] = ph
            run_phase(ph, cluster, api, args, None)
            report(ph, args)
        if peer_built:
            run_peer(cluster, api, args, peer_built, phases, container)
        names = [f"tj-{i:05d}" for i in range(n)]
        ph = Phase("operator", f"operator: {n} TrainingJobs (1 worker x 1 GPU) on {args.nodes} "
                               f"nodes x {args.gpus} GPUs", op_ns, names, lambda name: [trainingjob(name)],
                   "TrainingJob")
        phases["operator"] = ph
        run_phase(ph, cluster, api, args, op)
        report(ph, args)
        summary(phases, setup, args)
        rss = cluster.rss_bytes()
        print("RSS at the end        : " + ", ".join(
            f"{k} {v / MIB:.0f} MiB" for k, v in sorted(rss.items(), key=lambda kv: -kv[1])))
    finally:
        if args.keep:
            log(f"cluster kept: export KUBECONFIG={cluster.kubeconfig}; stop it with "
                f"`PYTHONPATH=hack python -m localkube down --state-dir {cluster.state_dir}` "
                f"(the operator included)")
        else:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
