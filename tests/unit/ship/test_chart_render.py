"""The Helm chart, rendered without a cluster: lint, Kubernetes 1.37 schemas, least-privilege
RBAC, the restricted Pod Security profile, labels, and values the schema must refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from operator_rbac import (  # the shared knowledge of the operator's requests
    CHART, console_requests, grants, helm, is_console, operator_requests, rbac_objects, render,
)

KUBERNETES = "1.37.0"
EVERYTHING_ON = {
    "watchNamespaces": ["team-a", "team-b"],
    "metrics": {"serviceMonitor": {"enabled": True}},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]},
                      "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    "operator": {"nodeSelector": {"kubernetes.io/os": "linux"},
                 "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
                 "extraEnv": [{"name": "EXTRA", "value": "1"}], "verbose": True,
                 "priorityClassName": "system-cluster-critical"},
    "imagePullSecrets": [{"name": "regcred"}],
}
VARIANTS = {
    "defaults": {},
    "namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "everything-on": EVERYTHING_ON,
    "metrics-off": {"metrics": {"enabled": False}},
    "digest": {"operator": {"image": {"digest": "sha256:" + "a" * 64}}},
}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection", "update"}
FORBIDDEN_RESOURCES = {"*", "secrets", "pods/exec", "pods/attach", "pods/portforward",
                       "nodes/proxy", "serviceaccounts/token", "clusterroles", "clusterrolebindings"}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(values=VARIANTS[request.param])


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    """The operator's objects of a kind (the console's: console_objects)."""
    return [d for d in docs if d["kind"] == kind and not is_console(d)]


def console_objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and is_console(d)]


def test_helm_lint_strict():
    out = subprocess.run([helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_builtin_kind_validates_against_kubernetes_schemas(rendered):
    import kubernetes_validate  # dev extra: kubernetes-validate==1.37.0
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # prometheus-operator's CRD, not a built-in kind
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        checked += 1
    assert checked >= 4


def test_crds_validate_against_kubernetes_schemas():
    import kubernetes_validate

    for path in sorted((CHART / "crds").glob("*.yaml")):
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), KUBERNETES, strict=True)


def test_crds_ship_in_the_chart_unchanged():
    for generated in sorted((CHART.parent.parent / "crds").glob("*.yaml")):
        assert (CHART / "crds" / generated.name).read_text() == generated.read_text()


# ------------------------------------------------------------------------------ RBAC
def all_rules(docs: list[dict], console: bool = False) -> list[dict]:
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") and is_console(d) == console
            for r in d["rules"]]


def test_rbac_has_no_wildcards_and_no_dangerous_grants(rendered):
    _, docs = rendered
    rules = all_rules(docs) + all_rules(docs, console=True)
    assert rules
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs
        assert "*" not in rule["apiGroups"], rule
        assert not set(rule["verbs"]) & FORBIDDEN_VERBS, rule
        assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, rule
        assert all("*" not in r for r in rule["resources"]), rule
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] not in ("cluster-admin", "admin", "edit", "view")
        [subject] = binding["subjects"]
        assert subject["kind"] == "ServiceAccount"


def test_rbac_grants_exactly_what_the_operator_requests(rendered):
    name, docs = rendered
    namespaced = bool(VARIANTS[name].get("watchNamespaces"))
    expected = set(operator_requests(namespaced))
    assert grants(all_rules(docs)) == expected


def test_clusterwide_uses_one_clusterrole():
    docs = render()
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    [role] = by_kind(docs, "ClusterRole")
    [binding] = by_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert "namespaces" not in {r for rule in role["rules"] for r in rule["resources"]}


def test_watching_namespaces_confines_writes_to_them():
    docs = render(values={"watchNamespaces": ["team-a", "team-b"]})
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["team-a", "team-b"]
    [cluster_role] = by_kind(docs, "ClusterRole")
    # Cluster-wide, only reads of CRDs and namespaces.
    assert grants(cluster_role["rules"]) == {
        (r) for r in operator_requests(True) if r.cluster_scoped}
    assert {v for rule in cluster_role["rules"] for v in rule["verbs"]} == {"list", "watch"}


def test_rbac_create_false_renders_no_rbac():
    docs = render(values={"rbac": {"create": False}})
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")]


def test_rbac_objects_are_only_the_identity_and_its_grants():
    kinds = sorted(d["kind"] for d in rbac_objects(render()))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"]


def test_the_console_may_only_read_what_its_pages_show(rendered):
    name, docs = rendered
    assert grants(all_rules(docs, console=True)) == set(console_requests())
    watched = VARIANTS[name].get("watchNamespaces")
    roles = console_objects(docs, "Role" if watched else "ClusterRole")
    assert sorted(r["metadata"].get("namespace", "") for r in roles) == sorted(watched or [""])
    [sa] = console_objects(docs, "ServiceAccount")
    for binding in console_objects(docs, "RoleBinding") + console_objects(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": "tauon-system"}]


def test_the_console_pod_is_restricted_and_can_be_turned_off():
    docs = render()
    [deployment] = console_objects(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    [c] = pod["containers"]
    assert c["command"] == ["tauon-operator", "console"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    [svc] = console_objects(docs, "Service")
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # the operator's Service and selector never pick the console's pod
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "console"
    assert not [d for d in render(values={"console": {"enabled": False}}) if is_console(d)]


# ------------------------------------------------------------------------------ the operator pod
def operator_pod(docs: list[dict]) -> dict:
    [deployment] = by_kind(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]


def test_operator_pod_meets_the_restricted_pod_security_standard(rendered):
    _, docs = rendered
    pod = operator_pod(docs)
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
        assert not sc.get("privileged")
        assert not c.get("ports") or all("hostPort" not in p for p in c["ports"])
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
               "projected", "secret"}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= allowed, volume


def test_operator_deployment_shape():
    docs = render()
    [deployment] = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    [sa] = by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    [c] = pod["containers"]
    assert c["command"] == ["tauon-operator"] and c["args"] == ["run"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8081, "metrics": 8000}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["TAUON_RUNTIME_IMAGE"] == "ghcr.io/tauon-dev/tauon-runtime:0.1.0"
    assert env["TAUON_RUNTIME_EDGE_IMAGE"] == "ghcr.io/tauon-dev/tauon-runtime-edge:0.1.0"
    assert env["TAUON_NAMESPACES"] == "" and env["TAUON_METRICS_PORT"] == "8000"
    assert env["TAUON_HEALTH_PORT"] == "8081" and env["TAUON_RUN_AS_USER"] == "65532"
    assert c["image"] == "ghcr.io/tauon-dev/tauon-operator:0.1.0"
    [svc] = by_kind(docs, "Service")
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_watch_namespaces_and_disabled_metrics_reach_the_operator():
    docs = render(values={"watchNamespaces": ["a", "b"], "metrics": {"enabled": False}})
    [c] = operator_pod(docs)["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["TAUON_NAMESPACES"] == "a,b" and env["TAUON_METRICS_PORT"] == "0"
    assert [p["name"] for p in c["ports"]] == ["health"]
    assert not by_kind(docs, "Service")


def test_the_artifact_store_reaches_the_operator_and_no_secret_is_read():
    store = {"endpoint": "https://s3.eu-west-1.amazonaws.com", "bucket": "ml-artifacts",
             "prefix": "team", "region": "eu-west-1", "secretName": "tauon-store"}
    docs = render(values={"store": store})
    [c] = operator_pod(docs)["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert {k: env[k] for k in env if k.startswith("TAUON_STORE")} == {
        "TAUON_STORE_ENDPOINT": store["endpoint"], "TAUON_STORE_BUCKET": "ml-artifacts",
        "TAUON_STORE_PREFIX": "team", "TAUON_STORE_REGION": "eu-west-1",
        "TAUON_STORE_SECRET": "tauon-store"}
    # only the Secret's name: the operator never holds the credentials
    assert not any("secretKeyRef" in str(e) for e in c["env"])
    [c] = operator_pod(render())["containers"]
    assert not any(e["name"].startswith("TAUON_STORE") for e in c["env"])  # no store: PVCs


def test_image_digest_wins_over_tag():
    docs = render(values=VARIANTS["digest"])
    [c] = operator_pod(docs)["containers"]
    assert c["image"] == "ghcr.io/tauon-dev/tauon-operator@sha256:" + "a" * 64


def test_every_object_carries_the_standard_labels(rendered):
    _, docs = rendered
    for doc in docs:
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/part-of", "helm.sh/chart"):
            assert key in labels, (doc["kind"], key)


def test_optional_objects_render_when_enabled():
    docs = render(values=EVERYTHING_ON)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"selector": pdb["spec"]["selector"], "maxUnavailable": 1}
    [policy] = by_kind(docs, "NetworkPolicy")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 8080}
    [serving] = [r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 8080]
    [peer] = serving["to"]  # only the serving pods, in any namespace
    assert peer["namespaceSelector"] == {} and peer["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["server", "server-canary"]}]
    assert not {"ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy"} & {d["kind"] for d in render()}


# ------------------------------------------------------------------------------ values schema
@pytest.mark.parametrize("args, complaint", [
    (["--set", "operator.replicas=2"], "replicas"),
    (["--set", "operator.image.tag=latest"], "tag"),
    (["--set", "operator.image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "operator.runAsUser=0"], "runAsUser"),
    (["--set", "runtime.runAsUser=root"], "runAsUser"),
    (["--set", "watchNamespaces[0]=Team_A"], "watchNamespaces"),
    (["--set", "metrics.port=99999"], "port"),
    (["--set", "unknownKey=1"], "unknownKey"),
    (["--set", "operator.image.digest=sha256:short"], "digest"),
    (["--set", "serviceAccount.create=false"], "name"),
    (["--set", "metrics.port=8081"], "must differ"),
    (["--set", "store.bucket=Bad_Bucket"], "bucket"),
    (["--set", "store.endpoint=s3.example.com"], "endpoint"),
])
def test_bad_values_fail_at_template_time(args, complaint):
    out = subprocess.run([helm(), "template", "t", str(CHART), *args], capture_output=True, text=True)
    assert out.returncode != 0
    assert complaint in out.stderr, out.stderr


def test_notes_say_what_to_do_next():
    out = subprocess.run([helm(), "install", "t", str(CHART), "--dry-run=client", "-n", "ns"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "kubectl get tauon" in notes and "examples/" in notes
    assert "kubectl delete crd datasets.tauon.dev" in notes
