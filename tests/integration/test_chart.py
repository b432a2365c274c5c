"""The Helm chart against the real control plane: install into a namespace that enforces the
restricted Pod Security profile, upgrade, uninstall; and the chart's RBAC, rule by rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import get_json, wait_for
from localkube.procutil import terminate
from operator_rbac import (
    CHART, Request, chart_rbac_kubeconfig, console_rbac_objects, console_requests, helm, is_console,
    operator_requests, rbac_objects, render,
    service_account,
)

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
CRD_NAMES = ("datasets.tauon.dev", "trainingjobs.tauon.dev", "modeldeployments.tauon.dev")
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}


def helm_run(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([helm(), f"--kubeconfig={cluster.kubeconfig}", *args],
                         capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def restricted_namespace(cluster, stem: str) -> str:
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": RESTRICTED}})
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
             what=f"default ServiceAccount in {name}")
    return name


def pod_security_rejections(cluster, namespace: str) -> list[str]:
    events = get_json(cluster, "events", "-n", namespace)["items"]
    return [e["message"] for e in events
            if e.get("reason") == "FailedCreate" or "PodSecurity" in e.get("message", "")]


def leftovers(cluster, release: str) -> list[str]:
    """Every object of the release still there, in any namespace, of the kinds a chart makes."""
    kinds = ("deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,roles,"
             "rolebindings,poddisruptionbudgets,networkpolicies")
    out = cluster.kubectl("get", kinds, "-A", "-l", f"app.kubernetes.io/instance={release}",
                          "-o", "name").stdout.split()
    out += cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l",
                           f"app.kubernetes.io/instance={release}", "-o", "name").stdout.split()
    # Helm's own release records.
    out += cluster.kubectl("get", "secrets", "-A", "-l", f"owner=helm,name={release}",
                           "-o", "name").stdout.split()
    return out


def test_install_upgrade_uninstall_under_restricted_pod_security(cluster, tmp_path):
    ns = restricted_namespace(cluster, "tauon-install")
    watched = restricted_namespace(cluster, "tauon-watched")
    release = f"tauon-{uuid.uuid4().hex[:5]}"

    out = helm_run(cluster, "install", release, str(CHART), "-n", ns, "--wait", "--timeout", "120s")
    assert "kubectl get tauon" in out.stdout  # NOTES
    for crd in CRD_NAMES:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    deployment = get_json(cluster, "deployment", release, "-n", ns)
    cluster.kubectl("wait", "--for=condition=Available", f"deployment/{release}", "-n", ns,
                    "--timeout=60s")
    cluster.kubectl("wait", "--for=condition=Available", f"deployment/{release}-console", "-n", ns,
                    "--timeout=60s")
    pods = get_json(cluster, "pods", "-n", ns, "-l", "app.kubernetes.io/instance=" + release)["items"]
    # the operator and the console, each its own pod, both admitted under `restricted`
    assert sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods) == ["console", "operator"]
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert pod_security_rejections(cluster, ns) == []
    # The API server's own verdict: no running pod here would be refused by `restricted`.
    verdict = cluster.kubectl("label", "--dry-run=server", "--overwrite", "namespace", ns,
                              "pod-security.kubernetes.io/enforce=restricted")
    assert "violate" not in verdict.stderr, verdict.stderr
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == release
    assert get_json(cluster, "clusterrole", release)["rules"]

    # Upgrade: watch one namespace only, no metrics, a new runtime tag.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "watchNamespaces": [watched],
        "metrics": {"enabled": False},
        "runtime": {"image": {"tag": "0.1.1"}},
        "operator": {"verbose": True},
    }))
    helm_run(cluster, "upgrade", release, str(CHART), "-n", ns, "-f", str(values),
             "--wait", "--timeout", "120s")
    cluster.kubectl("rollout", "status", f"deployment/{release}", "-n", ns, "--timeout=60s")
    container = get_json(cluster, "deployment", release, "-n", ns)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TAUON_NAMESPACES"] == watched and env["TAUON_METRICS_PORT"] == "0"
    assert env["TAUON_RUNTIME_IMAGE"].endswith(":0.1.1") and "--verbose" in container["args"]
    assert cluster.kubectl("get", "service", f"{release}-metrics", "-n", ns, check=False).returncode != 0
    assert cluster.kubectl("get", "clusterrole", release, check=False).returncode != 0  # replaced
    assert get_json(cluster, "clusterrole", f"{release}-cluster")["rules"]
    assert get_json(cluster, "role", release, "-n", watched)["rules"]
    assert get_json(cluster, "role", f"{release}-console", "-n", watched)["rules"]  # the console's
    wait_for(lambda: all(p["status"].get("phase") == "Running" for p in
                         get_json(cluster, "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={release}")["items"]),
             what="the upgraded operator pod")
    assert pod_security_rejections(cluster, ns) == []

    # Uninstall: nothing of the release remains; the CRDs do (Helm never deletes them).
    helm_run(cluster, "uninstall", release, "-n", ns, "--wait", "--timeout", "120s")
    wait_for(lambda: leftovers(cluster, release) == [], timeout=90, what=f"{release} removed")
    for crd in CRD_NAMES:
        assert get_json(cluster, "crd", crd)["metadata"]["name"] == crd
    for name in (ns, watched):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# ------------------------------------------------------------------------------ RBAC, rule by rule
def access_reviews(cluster, user_groups: dict[str, tuple[str, list[str]]],
                   requests: list[tuple[Request, str | None]]) -> dict[tuple[str, Request, str | None], bool]:
    """SubjectAccessReviews for every (subject, request, namespace): one kubectl call."""
    items, keys = [], []
    for key, (user, groups) in user_groups.items():
        for req, namespace in requests:
            attrs = {"verb": req.verb, "group": req.group, "resource": req.plural}
            if req.subresource:
                attrs["subresource"] = req.subresource
            if namespace:
                attrs["namespace"] = namespace
            items.append({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                          "spec": {"user": user, "groups": groups, "resourceAttributes": attrs}})
            keys.append((key, req, namespace))
    out = cluster.kubectl("create", "-f", "-", "-o", "json",
                          input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    # kubectl prints one object per created item.
    decoder, text, results, at = json.JSONDecoder(), out.stdout, [], 0
    while text[at:].strip():
        obj, at = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        results.extend(obj["items"] if obj.get("kind") == "List" else [obj])
    assert len(results) == len(keys)
    return {k: r["status"]["allowed"] for k, r in zip(keys, results)}


def without_rule(docs: list[dict], role_kind: str, index: int, suffix: str) -> list[dict]:
    """The chart's RBAC under new names (suffix), with rule `index` of every `role_kind` removed."""
    out = []
    for d in json.loads(json.dumps(docs)):
        m = d["metadata"]
        m["name"] = f"{m['name']}-{suffix}"
        m.pop("labels", None)
        if d["kind"] == role_kind and index is not None:
            del d["rules"][index]
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            d["roleRef"]["name"] = f"{d['roleRef']['name']}-{suffix}"
            for s in d["subjects"]:
                s["name"] = f"{s['name']}-{suffix}"
        out.append(d)
    return out


@pytest.mark.parametrize("mode", ["all-namespaces", "watch-namespaces"])
def test_every_rule_is_needed_and_together_they_grant_every_request(cluster, namespace, mode):
    """Each variant of the chart's RBAC lacks one rule; the requests only that rule grants must
    then be denied, and with every rule all of the operator's requests are allowed."""
    release_ns = namespace
    watch = [namespace] if mode == "watch-namespaces" else []
    docs = rbac_objects(render("tauon", release_ns, {"watchNamespaces": watch}))
    role_kind = "Role" if watch else "ClusterRole"
    # In watch mode the namespaced rules live in the Role; the small ClusterRole gets its turn too.
    variants: dict[str, tuple[list[dict], list[dict] | None]] = {"full": (without_rule(docs, role_kind, None, "full"), None)}
    targets = [(d["kind"], i, rule) for d in docs if d["kind"] in ("Role", "ClusterRole")
               for i, rule in enumerate(d["rules"])]
    for n, (kind, i, rule) in enumerate(targets):
        variants[f"minus{n}"] = (without_rule(docs, kind, i, f"minus{n}"), rule)
    everything = [d for objs, _ in variants.values() for d in objs]
    cluster.kubectl("apply", "--server-side", "-f", "-",
                    input="\n---\n".join(json.dumps(d) for d in everything))

    namespaced = bool(watch)
    requests = [(r, None if r.cluster_scoped else namespace) for r in operator_requests(namespaced)]
    subjects = {}
    for key, (objs, _) in variants.items():
        sa_ns, sa = service_account(objs)
        subjects[key] = (f"system:serviceaccount:{sa_ns}:{sa}",
                         ["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}", "system:authenticated"])

    def expected() -> dict:
        want = {}
        for key, (_, removed) in variants.items():
            lost = set() if removed is None else {
                Request(v, g, r) for g in removed["apiGroups"] for r in removed["resources"]
                for v in removed["verbs"]}
            assert removed is None or lost, removed
            for req, ns in requests:
                want[(key, req, ns)] = req not in lost
        return want

    want = expected()
    got = wait_for(lambda: (r := access_reviews(cluster, subjects, requests)) == want and r,
                   timeout=30, what="the authorizer to see every variant")
    # Every rule removed denies something the operator requests …
    for key, (_, removed) in variants.items():
        if removed is not None:
            assert any(not ok for (k, _, _), ok in got.items() if k == key), removed
    # … and with all of them, everything the operator requests is allowed.
    assert all(ok for (k, _, _), ok in got.items() if k == "full")
    if watch:  # nothing outside the watched namespaces
        outside = [(r, "default") for r in operator_requests(True) if not r.cluster_scoped]
        denied = access_reviews(cluster, {"full": subjects["full"]}, outside)
        assert not any(denied.values())


def test_chart_rbac_kubeconfig_authenticates_as_the_chart_service_account(cluster, crds, namespace):
    release = f"tauon-{uuid.uuid4().hex[:5]}"  # cluster-scoped names: one release per namespace
    path = chart_rbac_kubeconfig(cluster, release_namespace=namespace, release=release)
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=path).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{release}"
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, kubeconfig=path, check=False).stdout.strip()  # noqa: E731
    assert can("watch", "trainingjobs.tauon.dev", "--all-namespaces") == "yes"
    assert can("patch", "trainingjobs.tauon.dev", "--subresource=status", "-n", "default") == "yes"
    assert can("get", "secrets", "-n", namespace) == "no"
    assert can("create", "pods/exec", "-n", namespace) == "no"
    assert can("update", "deployments.apps", "-n", namespace) == "no"
    assert can("delete", "pods", "-n", namespace) == "no"


def test_the_consoles_service_account_may_only_read_what_its_pages_show(cluster, crds, namespace):
    """The chart's console identity, applied as helm would: it reads Tauon's kinds, Pods and
    Events, and cannot write anything, read a Secret or exec into a pod."""
    suffix = uuid.uuid4().hex[:5]
    docs = console_rbac_objects(render(f"tauon-{suffix}", namespace, {}))
    cluster.kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    [sa] = [d for d in docs if d["kind"] == "ServiceAccount"]
    subject = {"console": (f"system:serviceaccount:{namespace}:{sa['metadata']['name']}",
                           ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                            "system:authenticated"])}
    allowed = [(r, "default") for r in console_requests()]
    denied = [(Request(v, g, r), "default") for v, g, r in (
        ("get", "", "secrets"), ("list", "", "secrets"), ("watch", "", "secrets"),
        ("create", "tauon.dev", "trainingjobs"), ("delete", "tauon.dev", "modeldeployments"),
        ("patch", "tauon.dev", "datasets"), ("patch", "tauon.dev", "trainingjobs/status"),
        ("create", "", "pods"), ("delete", "", "pods"), ("create", "", "pods/exec"),
        ("get", "", "configmaps"), ("create", "", "services/proxy"), ("get", "", "serviceaccounts/token"))]
    got = wait_for(lambda: (r := access_reviews(cluster, subject, allowed + denied))
                   and all(r[("console", q, ns)] for q, ns in allowed) and r,
                   timeout=30, what="the console's grants to be seen")
    assert not any(got[("console", q, ns)] for q, ns in denied), [q for q, ns in denied if got[("console", q, ns)]]


# ------------------------------------------------------------------------------ the operator itself
@pytest.fixture
def operator_with_chart_rbac(cluster, crds, tmp_path):
    """`tauon-operator run` in a subprocess, authenticated with the chart's RBAC only, watching a
    fresh namespace that enforces the restricted Pod Security profile."""
    ns = restricted_namespace(cluster, "tauon-restricted")
    kubeconfig = chart_rbac_kubeconfig(cluster, release_namespace=ns, watch_namespaces=[ns],
                                       release=f"tauon-{uuid.uuid4().hex[:5]}")
    log = (tmp_path / "operator.log").open("w")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TAUON_NAMESPACES": ns,
           "TAUON_METRICS_PORT": "0", "TAUON_HEALTH_PORT": "0",
           "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("operator", "runtime"))}
    # The command line the chart's Deployment runs (its env is replaced by the one above).
    [deployment] = [d for d in render("tauon", ns, {"watchNamespaces": [ns]})
                    if d["kind"] == "Deployment" and not is_console(d)]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tauon-operator"]
    proc = subprocess.Popen([sys.executable, "-m", "tauon_operator", *container["args"]],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield ns, tmp_path / "operator.log"
    finally:
        terminate([proc], grace=15, group=False)
        log.close()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_operator_with_only_the_charts_rbac_creates_restricted_pods(cluster, operator_with_chart_rbac):
    """Every kind of write the operator makes (claims, Jobs, ConfigMaps, ServiceAccounts, Roles,
    RoleBindings, Deployments, Services, HPAs, status, Events) with the chart's RBAC alone, and
    every pod it causes admitted under `restricted`."""
    ns, log = operator_with_chart_rbac
    cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "dataset-minimal.yaml"))
    cluster.apply(
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "pinned"},
         "spec": {"model": {"uri": "pvc://models/digits/model.safetensors", "sha256": "a" * 64},
                  "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}},
        namespace=ns)
    ds = yaml.safe_load((REPO / "examples" / "dataset-minimal.yaml").read_text())["metadata"]["name"]
    made = lambda kinds, label: cluster.kubectl(  # noqa: E731
        "get", kinds, "-n", ns, "-l", label, "-o", "name").stdout
    try:
        wait_for(lambda: (get_json(cluster, "datasets.tauon.dev", ds, "-n", ns).get("status") or {}
                          ).get("conditions"), timeout=60, what="the Dataset's status")
        wait_for(lambda: made("pods", f"tauon.dev/dataset={ds}"), timeout=60, what="the prepare pod")
        wait_for(lambda: made("pods", "tauon.dev/modeldeployment=pinned"), timeout=60,
                 what="the inference pod")
        children = (made("persistentvolumeclaims,jobs,configmaps,serviceaccounts,roles,rolebindings",
                         f"tauon.dev/dataset={ds}")
                    + made("deployments,services,horizontalpodautoscalers",
                           "tauon.dev/modeldeployment=pinned"))
        for kind in ("persistentvolumeclaim/", "job.batch/", "configmap/", "serviceaccount/",
                     "role.rbac.authorization.k8s.io/", "rolebinding.rbac.authorization.k8s.io/",
                     "deployment.apps/", "service/", "horizontalpodautoscaler.autoscaling/"):
            assert kind in children, (kind, children)
        wait_for(lambda: (get_json(cluster, "modeldeployments.tauon.dev", "pinned", "-n", ns)
                          .get("status") or {}).get("conditions"), timeout=60,
                 what="the ModelDeployment's status")
    except BaseException:
        print(log.read_text()[-8000:])
        raise
    assert pod_security_rejections(cluster, ns) == []
    text = log.read_text()
    assert "403" not in text and "Forbidden" not in text, text[-8000:]


def test_dropping_autoscaling_or_the_canary_prunes_them_with_the_charts_rbac(
        cluster, operator_with_chart_rbac):
    """Removing spec.autoscaling removes the HPA (it would otherwise go on overriding replicas);
    removing spec.canary removes the canary Deployment, its run config and status.canary."""
    ns, log = operator_with_chart_rbac
    md = {"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "web"},
          "spec": {"model": {"uri": "pvc://models/m.safetensors", "sha256": "a" * 64},
                   "autoscaling": {"minReplicas": 2, "maxReplicas": 3},
                   "canary": {"model": {"uri": "pvc://models/c.safetensors", "sha256": "b" * 64},
                              "trafficPercent": 50}}}
    names = lambda kinds: set(cluster.kubectl(  # noqa: E731
        "get", kinds, "-n", ns, "-l", "tauon.dev/modeldeployment=web", "-o", "name").stdout.split())
    try:
        cluster.apply(md, namespace=ns)
        wait_for(lambda: {"horizontalpodautoscaler.autoscaling/web", "deployment.apps/web-canary",
                          "configmap/web-canary-serving"} <= names("hpa,deployments,configmaps"),
                 timeout=60, what="the HPA and the canary")
        wait_for(lambda: (get_json(cluster, "modeldeployments.tauon.dev", "web", "-n", ns)
                          .get("status") or {}).get("canary"), timeout=30, what="status.canary")
        spec = {k: v for k, v in md["spec"].items() if k not in ("autoscaling", "canary")}
        cluster.apply({**md, "spec": {**spec, "replicas": 1}}, namespace=ns)
        wait_for(lambda: not names("hpa,deployments,configmaps") & {
            "horizontalpodautoscaler.autoscaling/web", "deployment.apps/web-canary",
            "configmap/web-canary-serving"}, timeout=10, what="the HPA and the canary pruned")
        assert {"deployment.apps/web", "configmap/web-serving"} <= names("deployments,configmaps")
        wait_for(lambda: "canary" not in (get_json(cluster, "modeldeployments.tauon.dev", "web",
                                                   "-n", ns).get("status") or {}),
                 timeout=10, what="status.canary cleared")
        replicas = get_json(cluster, "deployments", "web", "-n", ns)["spec"]["replicas"]
        assert replicas == 1  # the operator owns replicas again, not a departed HPA
    except BaseException:
        print(log.read_text()[-8000:])
        raise
    text = log.read_text()
    assert "403" not in text and "Forbidden" not in text, text[-8000:]
