"""How fast Kueue admits queued TrainingJobs: N TrainingJobs (1 worker x 1 GPU) queued at once.

    python bench/kueue_admission.py [--jobs 100] [--quota N] [--no-store] [--keep]

Prints figures; it asserts nothing. One run, one local platform (hack/localplatform: the control
plane, kwok GPU nodes, the node agent, SeaweedFS as the artifact store unless --no-store), a
real Kueue (v0.17.0, hack/build-kueue.sh) and the operator as its own process. Two phases, each with its own namespace, LocalQueue and ClusterQueue
(`--quota` GPUs of quota, default N, so every job can be admitted and the figures are Kueue's
and the operator's own latency, not waiting for quota):

  bare      N bare batch/v1 Jobs labelled kueue.x-k8s.io/queue-name (Kueue's own batch/Job
            integration, suspended by its webhook): what Kueue alone needs. The baseline.
  operator  N TrainingJobs with the same label: the operator builds each worker Job (created
            suspended, labelled), Kueue admits its Workload and resumes it, the operator reports
            `Admitted` in the TrainingJob's status.

Per job, from the create call's return (this script polls every 0.2 s, so figures carry up to
0.2 s of resolution): the Workload exists, Kueue admitted it (the Workload's Admitted
condition), the pod is scheduled, and (operator) the TrainingJob's status says Admitted. The
last line is one JSON object; `ratioVsBare` is the operator's all-admitted time over the bare
Jobs'.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in ("hack", "operator", "runtime", "bench"):
    if str(REPO / _p) not in sys.path:
        sys.path.insert(0, str(REPO / _p))

import localplatform  # noqa: E402
from localkube import Cluster  # noqa: E402
from localkube.kueue import build, local_queue, queue_objects, version  # noqa: E402
from operator_scale import (  # noqa: E402 - bench/, beside this script
    GROUP_VERSION, MIB, admin_api, collection, cpu_by_component, dist, get_or_empty, log, pct,
    proc_status, wait,
)

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PLACEMENT = {"tolerations": [{**localplatform.SIMULATED_TAINT, "operator": "Equal"}],
             "nodeSelector": {"type": "kwok"}}
RESOURCES = {"gpus": 1, "cpu": "500m", "memory": "1Gi"}
POLL = 0.2


def trainingjob(name: str, queue: str) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "TrainingJob",
            "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
            "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"},
                     "resources": RESOURCES, **PLACEMENT}}


def worker_container() -> dict:
    """The trainer container the operator builds for trainingjob() (its own pure builder)."""
    from tauon_operator.builders import trainingjob as build
    from tauon_operator.settings import Settings

    tj = {**trainingjob("sample", "q"), "metadata": {
        "name": "sample", "namespace": "default", "uid": "0", "labels": {QUEUE_LABEL: "q"}}}
    job = next(c for c in build.build(tj, Settings(), 0) if c["kind"] == "Job")
    return job["spec"]["template"]["spec"]["containers"][0]


def bare_job(name: str, queue: str, container: dict) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 0,
                     "template": {"spec": {
                         "restartPolicy": "Never", **PLACEMENT,
                         "containers": [{"name": "trainer", "image": container["image"],
                                         "command": ["tauon-runtime"], "args": ["train"],
                                         "resources": container["resources"]}]}}}}


def _true(obj: dict, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


class Phase:
    def __init__(self, key: str, ns: str, names: list[str], unit_of_job):
        self.key, self.ns, self.names = key, ns, names
        self.unit_of_job = unit_of_job  # a Job -> the unit (its name or its TrainingJob's)
        self.created: dict[str, float] = {}
        self.seen: dict[str, dict[str, float]] = {k: {} for k in
                                                  ("workload", "admitted", "scheduled", "status")}
        self.cpu: dict[str, float] = {}

    def poll(self, api, tracked_status: bool) -> None:
        now = time.monotonic()
        jobs = get_or_empty(api, collection("batch/v1", "jobs", self.ns)).get("items", [])
        units_by_uid = {j["metadata"]["uid"]: self.unit_of_job(j) for j in jobs}
        units_by_name = {j["metadata"]["name"]: self.unit_of_job(j) for j in jobs}
        for wl in get_or_empty(api, collection("kueue.x-k8s.io/v1beta2", "workloads",
                                               self.ns)).get("items", []):
            uid = (wl["metadata"].get("labels") or {}).get("kueue.x-k8s.io/job-uid")
            unit = units_by_uid.get(uid or "")
            if unit:
                self.seen["workload"].setdefault(unit, now)
                if _true(wl, "Admitted"):
                    self.seen["admitted"].setdefault(unit, now)
        for pod in get_or_empty(api, collection("v1", "pods", self.ns)).get("items", []):
            owner = next((o["name"] for o in pod["metadata"].get("ownerReferences") or []
                          if o["kind"] == "Job"), None)
            job_unit = units_by_name.get(owner or "")
            if job_unit and pod["spec"].get("nodeName"):
                self.seen["scheduled"].setdefault(job_unit, now)
        if tracked_status:
            for tj in get_or_empty(api, collection(GROUP_VERSION, "trainingjobs",
                                                   self.ns)).get("items", []):
                if _true(tj, "Admitted"):
                    self.seen["status"].setdefault(tj["metadata"]["name"], now)

    def latencies(self, key: str) -> list[float]:
        return [self.seen[key][n] - self.created[n] for n in self.names if n in self.seen[key]]


def run_phase(phase: Phase, cluster: Cluster, api, objects_of, plural: str,
              timeout: float, tracked_status: bool) -> dict:
    cpu0 = cpu_by_component(cluster)
    path = collection(objects_of(phase.names[0])["apiVersion"], plural, phase.ns)

    def create(name: str) -> None:
        api.create(path, objects_of(name))
        phase.created[name] = time.monotonic()

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, phase.names))
    log(f"{phase.key}: {len(phase.names)} created in {time.monotonic() - t0:.1f} s")
    want = "status" if tracked_status else "admitted"
    deadline = t0 + timeout
    last = 0.0
    while time.monotonic() < deadline:
        phase.poll(api, tracked_status)
        done = {k: len(v) for k, v in phase.seen.items()}
        if time.monotonic() - last > 10:
            log(f"{phase.key}: " + ", ".join(f"{k} {v}" for k, v in done.items()))
            last = time.monotonic()
        if all(len(phase.seen[k]) == len(phase.names) for k in ("admitted", "scheduled", want)):
            break
        time.sleep(POLL)
    cpu1 = cpu_by_component(cluster)
    phase.cpu = {k: cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu1}
    everything = [phase.seen["admitted"].get(n) for n in phase.names]
    result = {
        "jobs": len(phase.names),
        "admitted": len(phase.seen["admitted"]),
        "allAdmittedS": round(max(everything) - t0, 2) if all(everything) else None,
        "admitP50S": round(pct(phase.latencies("admitted"), 50), 2),
        "admitP99S": round(pct(phase.latencies("admitted"), 99), 2),
        "scheduledP50S": round(pct(phase.latencies("scheduled"), 50), 2),
        "scheduledP99S": round(pct(phase.latencies("scheduled"), 99), 2),
    }
    if tracked_status:
        result["statusAdmittedP50S"] = round(pct(phase.latencies("status"), 50), 2)
        result["statusAdmittedP99S"] = round(pct(phase.latencies("status"), 99), 2)
    print(f"\n== {phase.key}: {len(phase.names)} jobs queued at once")
    print(f"  all admitted after      : {result['allAdmittedS']} s "
          f"({result['admitted']}/{len(phase.names)})")
    for key, title in (("workload", "create -> Workload"), ("admitted", "create -> admitted"),
                       ("scheduled", "create -> pod scheduled"),
                       ("status", "create -> status Admitted")):
        if key != "status" or tracked_status:
            print(f"  {title:<24}: {dist(phase.latencies(key))}")
    print("  CPU-s in the phase      : " + ", ".join(
        f"{k} {v:.0f}" for k, v in sorted(phase.cpu.items(), key=lambda kv: -kv[1]) if v >= 0.5))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100, help="jobs per phase (1 GPU each)")
    ap.add_argument("--quota", type=int, help="GPUs of quota per ClusterQueue (default --jobs)")
    ap.add_argument("--phase-timeout", type=float, default=600)
    ap.add_argument("--store", action=argparse.BooleanOptionalAction, default=True,
                    help="the artifact store, as the platform has (no output claim per "
                         "TrainingJob); --no-store: each TrainingJob's output claim must bind")
    ap.add_argument("--keep", action="store_true", help="leave the platform running")
    args = ap.parse_args()
    n, quota = args.jobs, args.quota or args.jobs
    nodes = math.ceil(2 * n / 8)
    kueue = version(build())
    log(f"starting the platform: {nodes} kwok nodes x 8 GPUs, Kueue {kueue}")
    t = time.monotonic()
    cluster = localplatform.start(gpu_nodes=nodes, operator=False, object_store=args.store,
                                  kueue=True)
    try:
        api = admin_api(cluster)
        localplatform.start_operator(cluster)
        op_pid = cluster.info["pids"]["tauon-operator"]
        for key in ("bare", "operator"):
            ns = f"queued-{key}"
            cluster.kubectl("create", "namespace", ns)
            cluster.apply(*queue_objects(key, gpus=quota))
            cluster.apply(local_queue(key, ns, key))
            if args.store:
                localplatform.grant_store(cluster, ns)
        cluster.apply({"apiVersion": GROUP_VERSION, "kind": "Dataset",
                       "metadata": {"name": "digits"},
                       "spec": {"source": {"builtin": {"name": "digits"}}}},
                      namespace="queued-operator")
        wait(lambda: (get_or_empty(api, collection(GROUP_VERSION, "datasets", "queued-operator")
                                   + "/digits").get("status") or {}).get("phase") == "Ready",
             300, "Dataset digits Ready (prepared on the node agent)")
        log(f"platform ready in {time.monotonic() - t:.0f} s")

        container = worker_container()
        bare = Phase("bare", "queued-bare", [f"job-{i:04d}" for i in range(n)],
                     lambda j: j["metadata"]["name"])
        results = {"bare": run_phase(bare, cluster, api, lambda nm: bare_job(nm, "bare", container),
                                     "jobs", args.phase_timeout, tracked_status=False)}
        ours = Phase("operator", "queued-operator", [f"tj-{i:04d}" for i in range(n)],
                     lambda j: (j["metadata"].get("labels") or {}).get("tauon.dev/trainingjob", ""))
        results["operator"] = run_phase(ours, cluster, api, lambda nm: trainingjob(nm, "operator"),
                                        "trainingjobs", args.phase_timeout, tracked_status=True)
        rss = proc_status(op_pid)
        results["operator"]["operatorPeakRssMiB"] = round(rss.get("VmHWM", 0) / MIB)
        b, o = results["bare"]["allAdmittedS"], results["operator"]["allAdmittedS"]
        ratio = round(o / b, 2) if b and o else None
        print(f"\noperator / bare Jobs, all admitted: {ratio}  "
              f"(p50 create -> admitted {results['operator']['admitP50S']} s vs "
              f"{results['bare']['admitP50S']} s)")
        print(json.dumps({"bench": "kueue_admission", "kueue": kueue, "jobs": n,
                          "quotaGpus": quota, "nodes": nodes, "store": args.store, **results, "ratioVsBare": ratio}))
    finally:
        if args.keep:
            log(f"platform kept: export KUBECONFIG={cluster.kubeconfig}")
        else:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
