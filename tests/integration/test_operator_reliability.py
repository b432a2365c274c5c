"""The operator under restarts, drift, change and API outages (issue 18), as an SRE would try it:
the operator as its own process with the chart's RBAC, SIGKILLed and restarted, its children
edited and deleted behind its back, the API server taken away.

This module runs its own control plane: it kills the operator and the API server, which the
session's shared cluster must not see. Writes are counted by the API server itself: its audit
log records every write with the identity that made it."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubetest import (apply_objects, finish_pods, get_json, install_crds, new_namespace, status_of,
                      succeed_with_model, wait_for, wait_phase)
from localkube import Cluster
from localkube.cluster import tool
from localkube.procutil import free_port, terminate
from operator_rbac import chart_rbac_kubeconfig

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
GROUP = "tauon.dev/v1alpha1"
CHILD_KINDS = "jobs,deployments,services,configmaps,serviceaccounts,roles,rolebindings,pvc,hpa"


# ------------------------------------------------------------------------------ the plane
@pytest.fixture(scope="module")
def plane():
    with Cluster.start(audit=True) as c:
        install_crds(c)
        yield c


class Operator:
    """`tauon-operator run` as its own process, as the chart's Deployment runs it."""

    def __init__(self, cluster: Cluster, log: Path):
        self.kubeconfig = chart_rbac_kubeconfig(cluster)
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Operator":
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "TAUON_METRICS_PORT": str(self.port), "TAUON_HEALTH_PORT": "0",
               "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("operator", "runtime"))}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tauon_operator", "run"],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            terminate([self.proc], grace=10, group=False)

    def reconciles(self) -> float:
        """Successful reconciles since this process started (its own metrics), or -1."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read()
        except OSError:
            return -1
        return sum(s.value for f in text_string_to_metric_families(text.decode())
                   if f.name == "tauon_reconcile" for s in f.samples
                   if s.name == "tauon_reconcile_total" and s.labels["result"] == "success")

    def settle(self, parents: int, quiet: float = 3.0, timeout: float = 120) -> None:
        """Waits until every parent was reconciled once and then nothing ran for `quiet` s."""
        wait_for(lambda: self.reconciles() >= parents, timeout=timeout,
                 what=f"{parents} reconciles after start")
        last, since = self.reconciles(), time.monotonic()
        while time.monotonic() - since < quiet:
            time.sleep(0.5)
            now = self.reconciles()
            if now != last:
                last, since = now, time.monotonic()

    def text(self) -> str:
        return self.log.read_text()[-6000:]


@pytest.fixture
def operator(plane, tmp_path):
    op = Operator(plane, tmp_path / "operator.log").start()
    yield op
    op.stop()


@pytest.fixture
def ns(plane, request):
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[5:40].strip("-")
    # Right after an API server outage the controller-manager relists everything before its
    # ServiceAccount controller catches up: on a full run's 2 busy cores that took over 60 s.
    name = new_namespace(plane, f"{stem}-{uuid.uuid4().hex[:5]}", timeout=180)
    yield name
    plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


OPERATOR = ":tauon-system:"  # the chart's ServiceAccount: system:serviceaccount:tauon-system:…


def operator_writes(cluster, namespace: str, since: float) -> list[str]:
    """The operator's write requests in `namespace` since `since`, as `VERB kind/name`."""
    return [f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}"
            f"{'/' + e['objectRef']['subresource'] if e['objectRef'].get('subresource') else ''}"
            for e in cluster.writes(since, OPERATOR, namespace)]


apply = apply_objects


def cr(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": GROUP, "kind": kind, "metadata": {"name": name}, "spec": spec}


def trainingjob(name: str, **spec) -> dict:
    return cr("TrainingJob", name, {
        "datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"},
        "resources": {"gpus": 0, "cpu": "250m", "memory": "256Mi"}, **spec})


def ready_dataset(cluster, namespace: str) -> None:
    apply(cluster, namespace, cr("Dataset", "digits", {"source": {"builtin": {"name": "digits"}}}))
    finish_pods(cluster, namespace, "tauon.dev/dataset=digits")
    wait_phase(cluster, "tds", "digits", namespace, "Ready")


def trained(cluster, namespace: str, name: str, sha: str) -> None:
    apply(cluster, namespace, trainingjob(name))
    succeed_with_model(cluster, namespace, name, sha, accuracy=0.9)


def snapshot(cluster, namespace: str) -> dict:
    """Every child's identity and generation, every parent's resourceVersion."""
    out = {}
    for item in get_json(cluster, CHILD_KINDS, "-n", namespace, "-l",
                         "app.kubernetes.io/managed-by=tauon")["items"]:
        m = item["metadata"]
        out[(item["kind"], m["name"])] = (m["uid"], m.get("generation"))
    for item in get_json(cluster, "tds,tj,mdep", "-n", namespace)["items"]:
        m = item["metadata"]
        out[(item["kind"], m["name"])] = (m["uid"], m["resourceVersion"])
    return out


def phases(cluster, kind: str, namespace: str) -> dict[str, str]:
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase")
            for i in get_json(cluster, kind, "-n", namespace)["items"]}


# ------------------------------------------------------------------------------ restarts
IDLE: dict[str, object] = {}  # the restart test's namespace, left in place to sit idle


@pytest.fixture(scope="module")
def idle_ns(plane):
    """A namespace that outlives its test: its objects sit idle while the module's other tests
    run (operator restarts and API outages included); the last test checks it saw no write."""
    return new_namespace(plane, "idle")


def test_restarts_change_nothing(plane, idle_ns, operator):
    """100 running TrainingJobs and 50 ModelDeployments (half with canaries that follow a
    TrainingJob), the operator SIGKILLed and restarted 5 times: not one write."""
    ns = idle_ns
    ready_dataset(plane, ns)
    trained(plane, ns, "stable", "a" * 64)
    trained(plane, ns, "candidate", "b" * 64)
    apply(plane, ns, *(trainingjob(f"run-{i:03d}") for i in range(100)))
    deployments = []
    for i in range(50):
        spec: dict = {"model": {"trainingJobRef": {"name": "stable"}}, "replicas": 2,
                      "resources": {"cpu": "100m", "memory": "128Mi"}}
        if i % 2:
            spec["canary"] = {"model": {"trainingJobRef": {"name": "candidate"}},
                              "trafficPercent": 50}
        deployments.append(cr("ModelDeployment", f"web-{i:02d}", spec))
    apply(plane, ns, *deployments)
    wait_for(lambda: list(phases(plane, "tj", ns).values()).count("Running") == 100,
             timeout=180, what="100 TrainingJobs Running")
    wait_for(lambda: list(phases(plane, "mdep", ns).values()).count("Ready") == 50,
             timeout=180, what="50 ModelDeployments Ready")
    operator.settle(parents=153)
    before, since = snapshot(plane, ns), time.time()
    try:
        for _ in range(5):
            operator.kill()
            operator.start()
            operator.settle(parents=153)
        assert operator_writes(plane, ns, since) == [], "writes over 5 restarts"
        after = snapshot(plane, ns)
        changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
        assert changed == {}, "children re-created or re-generated, or parents' status written"
        assert set(after) == set(before)
    except BaseException:
        print(operator.text())
        raise
    IDLE.update(namespace=ns, since=time.time(), snapshot=after)


# ------------------------------------------------------------------------------ completion
def test_two_hundred_completions_only_move_forward(plane, ns, operator):
    """Pods exiting before their Job says Complete never send a run back to Pending."""
    ready_dataset(plane, ns)
    apply(plane, ns, *(trainingjob(f"run-{i:03d}") for i in range(200)))
    wait_for(lambda: list(phases(plane, "tj", ns).values()).count("Running") == 200,
             timeout=240, what="200 TrainingJobs Running")
    seen: dict[str, list[str]] = collections.defaultdict(list)
    watch = subprocess.Popen(
        [tool("kubectl"), f"--kubeconfig={plane.kubeconfig}", "get", "tj", "-n", ns, "-w",
         "--output-watch-events", "-o", "jsonpath={.object.metadata.name} "
         "{.object.status.phase}{\"\\n\"}"],
        stdout=subprocess.PIPE, text=True)

    def record():
        assert watch.stdout is not None
        for line in watch.stdout:
            name, _, phase = line.strip().partition(" ")
            if phase and (not seen[name] or seen[name][-1] != phase):
                seen[name].append(phase)

    reader = threading.Thread(target=record, daemon=True)
    reader.start()
    try:
        time.sleep(2)
        plane.kubectl("annotate", "pods", "-n", ns, "-l", "app.kubernetes.io/component=trainer",
                      "sim.tauon.dev/exit-code=0")
        wait_for(lambda: list(phases(plane, "tj", ns).values()).count("Succeeded") == 200,
                 timeout=240, what="200 TrainingJobs Succeeded")
        time.sleep(2)
    finally:
        watch.terminate()
        reader.join(timeout=5)
    rank = {"Pending": 0, "Running": 1, "Succeeded": 2}
    backwards = {n: p for n, p in seen.items()
                 if any(rank.get(b, -1) < rank.get(a, -1) for a, b in zip(p, p[1:]))}
    assert backwards == {}
    assert sum(1 for p in seen.values() if p[-1] == "Succeeded") == 200
    assert all(p[-2:] == ["Running", "Succeeded"] for p in seen.values()), seen


# ------------------------------------------------------------------------------ drift
def _container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_what_others_break_is_repaired_within_seconds(plane, ns, operator):
    """Every kind of child, deleted or with an owned field edited, is put back in seconds;
    a field another manager owns (replicas under an HPA) stays theirs. (A claim is not here:
    one in use cannot be deleted, kubernetes.io/pvc-protection holds it until its pods go.)"""
    ready_dataset(plane, ns)
    trained(plane, ns, "stable", "a" * 64)
    apply(plane, ns, trainingjob("run"))
    apply(plane, ns, cr("ModelDeployment", "web", {
        "model": {"trainingJobRef": {"name": "stable"}}, "replicas": 2,
        "resources": {"cpu": "100m", "memory": "128Mi"}}))
    apply(plane, ns, cr("ModelDeployment", "elastic", {
        "model": {"trainingJobRef": {"name": "stable"}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}))
    wait_phase(plane, "tj", "run", ns, "Running")
    wait_phase(plane, "mdep", "web", ns, "Ready", timeout=90)
    wait_for(lambda: plane.kubectl("get", "hpa", "elastic", "-n", ns, check=False).returncode == 0,
             what="the HPA")

    def back(kind: str, name: str, check=lambda o: True, timeout: float = 10) -> dict:
        def found():
            res = plane.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
            obj = json.loads(res.stdout) if res.returncode == 0 else None
            return obj if obj and not obj["metadata"].get("deletionTimestamp") and check(obj) else None
        return wait_for(found, timeout=timeout, what=f"{kind} {name} repaired")

    try:
        # Deleted: each kind the operator creates for a TrainingJob and a ModelDeployment (a
        # one-process run has no headless Service: the ModelDeployment's stands for the kind).
        for kind, name in (("service", "web"), ("configmap", "web-serving"),
                           ("configmap", "run-config"),
                           ("rolebinding", "run-trainer"), ("role", "run-trainer"),
                           ("serviceaccount", "run-trainer"), ("deployment", "web"),
                           ("hpa", "elastic"), ("job", "run-a0")):
            uid = get_json(plane, kind, name, "-n", ns)["metadata"]["uid"]
            plane.kubectl("delete", kind, name, "-n", ns, "--wait=false")
            back(kind, name, lambda o, uid=uid: o["metadata"]["uid"] != uid)
        # Owned fields edited.
        dep = get_json(plane, "deployment", "web", "-n", ns)
        image, command = _container(dep)["image"], _container(dep).get("args")
        plane.kubectl("patch", "deployment", "web", "-n", ns, "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/image",
             "value": "registry.example/evil:1"},
            {"op": "replace", "path": "/spec/replicas", "value": 0}]))
        back("deployment", "web", lambda o: _container(o)["image"] == image
             and o["spec"]["replicas"] == 2)
        plane.kubectl("patch", "deployment", "web", "-n", ns, "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": ["sleep"]}]))
        back("deployment", "web", lambda o: _container(o).get("args") == command)
        wait_phase(plane, "mdep", "web", ns, "Ready", timeout=30)
        rules = get_json(plane, "role", "run-trainer", "-n", ns)["rules"]
        plane.kubectl("patch", "role", "run-trainer", "-n", ns, "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/rules", "value": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}]))
        back("role", "run-trainer", lambda o: o["rules"] == rules)
        cm = get_json(plane, "configmap", "web-serving", "-n", ns)
        plane.kubectl("patch", "configmap", "web-serving", "-n", ns, "--type=merge",
                      "-p", json.dumps({"data": {k: "{}" for k in cm["data"]}}))
        back("configmap", "web-serving", lambda o: o["data"] == cm["data"])
        # Another manager's field: the HPA's replicas are the HPA's.
        plane.kubectl("scale", "deployment", "elastic", "-n", ns, "--replicas=3")
        time.sleep(5)
        assert get_json(plane, "deployment", "elastic", "-n", ns)["spec"]["replicas"] == 3
        wait_phase(plane, "tj", "run", ns, "Running", timeout=20)  # its Job re-made, its pod back
    except BaseException:
        print(operator.text())
        raise


# ------------------------------------------------------------------------------ mid-run change
def test_changes_during_a_run_end_truthfully(plane, ns, operator):
    """The Dataset deleted under a running job: it still succeeds with its model. More workers
    asked of a running job: it says the change waits for the next attempt."""
    ready_dataset(plane, ns)
    apply(plane, ns, trainingjob("orphan"), trainingjob("grow"))
    wait_phase(plane, "tj", "orphan", ns, "Running")
    wait_phase(plane, "tj", "grow", ns, "Running")

    plane.kubectl("delete", "tds", "digits", "-n", ns, "--wait=false")
    plane.kubectl("patch", "tj", "grow", "-n", ns, "--type=merge", "-p", '{"spec": {"workers": 2}}')

    def unapplied():
        st = status_of(plane, "tj", "grow", ns)
        c = next((c for c in st.get("conditions") or [] if c["type"] == "SpecApplied"), {})
        return st if c.get("reason") == "SpecChangeNotApplied" and st.get("observedGeneration") == 2 else None

    st = wait_for(unapplied, timeout=10, what="SpecApplied=False on grow")
    assert st["phase"] == "Running"
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert "1/2" not in ready["message"]
    assert get_json(plane, "job", "grow-a0", "-n", ns)["spec"]["parallelism"] == 1

    time.sleep(3)
    assert status_of(plane, "tj", "orphan", ns)["phase"] == "Running"
    plane.kubectl("patch", "tj", "orphan", "-n", ns, "--subresource=status", "--type=merge", "-p",
                  json.dumps({"status": {"model": {"sha256": "c" * 64, "metrics": {"accuracy": 0.9}}}}))
    finish_pods(plane, ns, "tauon.dev/trainingjob=orphan")
    st = wait_phase(plane, "tj", "orphan", ns, "Succeeded")
    assert st["model"]["sha256"] == "c" * 64


# ------------------------------------------------------------------------------ refusals
def test_a_child_the_api_server_refuses_stalls_the_parent_without_retry(plane, ns, operator):
    """A cluster policy (a ValidatingAdmissionPolicy) refuses the Job the operator builds: the
    TrainingJob says so in Stalled within seconds, and the operator does not try again."""
    policy = f"refuse-jobs-{ns}"[:63]
    plane.apply(
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": policy},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{
                      "apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs"],
                      "operations": ["CREATE", "UPDATE"]}]},
                  "validations": [{"expression": "!object.metadata.name.startsWith('refused')",
                                   "message": "jobs named refused* are not allowed here"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
         "spec": {"policyName": policy, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": ns}}}}})
    try:
        ready_dataset(plane, ns)
        time.sleep(2)  # the policy reaches the admission chain
        started = time.monotonic()
        apply(plane, ns, trainingjob("refused"))

        def stalled():
            st = status_of(plane, "tj", "refused", ns)
            c = next((c for c in st.get("conditions") or [] if c["type"] == "Stalled"), {})
            return st if c.get("status") == "True" else None

        st = wait_for(stalled, timeout=5, interval=0.1, what="Stalled")
        assert time.monotonic() - started <= 5.5
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec" and "not allowed here" in ready["message"]
        since = time.time() + 1  # after the Stalled write and its Event
        time.sleep(21)
        assert operator_writes(plane, ns, since) == [], "a refused child is retried"
    except BaseException:
        print(operator.text())
        raise
    finally:
        plane.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                      policy, check=False)


# ------------------------------------------------------------------------------ idle
def test_five_idle_minutes_write_nothing(plane, operator):
    """The restart test's 150 objects, idle while every test above ran (operator restarts,
    other namespaces busy): not one write from the operator in their namespace. (Before the
    outages: a 5-minute outage misses node heartbeats, and the pods' readiness then really
    changes.)"""
    if not IDLE:
        pytest.skip("the restart test did not leave its namespace")
    ns, since = str(IDLE["namespace"]), float(IDLE["since"])  # type: ignore[arg-type]
    time.sleep(max(0.0, since + 300 - time.time()))
    assert operator_writes(plane, ns, since) == []
    assert snapshot(plane, ns) == IDLE["snapshot"]


# ------------------------------------------------------------------------------ outages
def _restart_apiserver(cluster: Cluster, outage: float) -> float:
    """Kills the API server, waits `outage` seconds, starts it again with the same arguments;
    returns when it answered /readyz (monotonic time)."""
    pid = cluster.info["pids"]["kube-apiserver"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    os.kill(pid, signal.SIGKILL)
    time.sleep(outage)
    cluster.spawn("kube-apiserver", argv)
    wait_for(lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
             timeout=60, interval=0.1, what="the API server back")
    return time.monotonic()


@pytest.mark.parametrize("outage", [60, 300])
def test_recovery_after_an_api_outage_takes_seconds(plane, ns, operator, outage):
    ready_dataset(plane, ns)
    back = _restart_apiserver(plane, outage)
    apply(plane, ns, trainingjob("after"))
    wait_for(lambda: plane.kubectl("get", "job", "after-a0", "-n", ns, check=False).returncode == 0,
             timeout=30, interval=0.1, what="the Job of a TrainingJob created after the outage")
    took = time.monotonic() - back
    print(f"outage {outage}s: a new TrainingJob's Job {took:.1f}s after the API server returned")
    assert took <= 6, operator.text()
