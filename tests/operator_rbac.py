"""The operator's RBAC, exactly as the Helm chart ships it, for tests.

    from operator_rbac import chart_rbac_kubeconfig
    kubeconfig = chart_rbac_kubeconfig(cluster)            # watch every namespace (ClusterRole)
    kubeconfig = chart_rbac_kubeconfig(cluster, watch_namespaces=[ns])   # Roles in `ns` only

renders charts/tauon with `helm template`, applies its ServiceAccount, (Cluster)Roles and
bindings and nothing else, mints a token for that ServiceAccount and returns a kubeconfig that
authenticates with it: run the operator with it and it can do exactly what the chart allows.

OPERATOR_REQUESTS lists every API request the operator makes (operator/tauon_operator/kube.py,
controller.py, handlers/watch.py, and kopf itself); the chart's tests check that the chart's
rules grant exactly these and that each rule is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "tauon"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def helm() -> str:
    """helm from the venv running the tests (the project pins it), else from PATH."""
    here = Path(sys.executable).parent / "helm"
    found = str(here) if here.exists() else shutil.which("helm")
    if not found:
        raise RuntimeError("helm not found: run hack/setup-venv.sh")
    return found


def render(release: str = "tauon", namespace: str = "tauon-system", values: dict | None = None,
           chart: Path = CHART) -> list[dict]:
    """`helm template` of the chart with these values: the objects, in order."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        out = subprocess.run(
            [helm(), "template", release, str(chart), "--namespace", namespace, "-f", f.name],
            capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"helm template failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def is_console(d: dict) -> bool:
    return (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "console"


def rbac_objects(docs: Iterable[dict]) -> list[dict]:
    """The operator's identity and grants (the console has its own: console_rbac_objects)."""
    return [d for d in docs if d["kind"] in RBAC_KINDS and not is_console(d)]


def console_rbac_objects(docs: Iterable[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in RBAC_KINDS and is_console(d)]


def console_requests() -> tuple[Request, ...]:
    """Every request the console makes: reads of what its pages show, nothing else."""
    return tuple(_requests("tauon.dev", ("datasets", "trainingjobs", "modeldeployments"),
                           ("get", "list", "watch"))
                 + _requests("", ["pods", "events"], ("get", "list", "watch")))


@dataclass(frozen=True)
class Request:
    """One kind of API request: `verb` on `group`/`resource` (`resource/subresource`)."""
    verb: str
    group: str
    resource: str
    cluster_scoped: bool = field(default=False, compare=False)

    @property
    def plural(self) -> str:
        return self.resource.split("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]


def _requests(group: str, resources: Iterable[str], verbs: Iterable[str],
              cluster_scoped: bool = False) -> list[Request]:
    return [Request(v, group, r, cluster_scoped) for r in resources for v in verbs]


KINDS = ("datasets", "trainingjobs", "modeldeployments")
# Every request the operator makes in a namespace it watches.
NAMESPACED_REQUESTS: tuple[Request, ...] = tuple(
    # kopf lists and watches the custom resources; the status writer merge-patches /status
    # (and needs get+patch there to grant them to the runtime's per-object Role).
    _requests("tauon.dev", KINDS, ("get", "list", "watch"))
    + _requests("tauon.dev", [f"{k}/status" for k in KINDS], ("get", "patch"))
    # A ModelDeployment's retraining rounds: a Dataset and a TrainingJob, applied and pruned.
    + _requests("tauon.dev", ["datasets", "trainingjobs"], ("create", "patch", "delete"))
    # Jobs and Deployments: watched, server-side applied (PATCH, which creates too), deleted.
    + _requests("batch", ["jobs"], ("get", "list", "watch", "create", "patch", "delete"))
    + _requests("apps", ["deployments"], ("get", "list", "watch", "create", "patch", "delete"))
    + _requests("", ["pods"], ("get", "list", "watch"))
    # Every other child: watched into the cache and server-side applied; the run configs and
    # the autoscaler are also pruned when the spec no longer wants them.
    + _requests("", ["services", "serviceaccounts", "persistentvolumeclaims"],
                ("list", "watch", "create", "patch"))
    + _requests("", ["configmaps"], ("list", "watch", "create", "patch", "delete"))
    + _requests("autoscaling", ["horizontalpodautoscalers"],
                ("list", "watch", "create", "patch", "delete"))
    + _requests("rbac.authorization.k8s.io", ["roles", "rolebindings"],
                ("list", "watch", "create", "patch"))
    # Kueue's Workloads: listed and watched (read only) when Kueue is installed.
    + _requests("kueue.x-k8s.io", ["workloads"], ("list", "watch"))
    # kopf posts Events (core v1); it never updates one.
    + _requests("", ["events"], ("create",))
)
# kopf's discovery follows the CRDs in every mode; it observes namespaces only when it watches
# a list of them.
CRD_REQUESTS = tuple(_requests("apiextensions.k8s.io", ["customresourcedefinitions"],
                               ("list", "watch"), cluster_scoped=True)
                     # the taints a pod that cannot be placed does not tolerate
                     + _requests("", ["nodes"], ("list",), cluster_scoped=True))
NAMESPACE_REQUESTS = tuple(_requests("", ["namespaces"], ("list", "watch"), cluster_scoped=True))


def operator_requests(namespaced: bool) -> tuple[Request, ...]:
    """The operator's requests: namespaced=True when it watches a list of namespaces."""
    return NAMESPACED_REQUESTS + CRD_REQUESTS + (NAMESPACE_REQUESTS if namespaced else ())


def grants(rules: Iterable[dict]) -> set[Request]:
    """The (verb, group, resource) triples a list of PolicyRules allows (no wildcards here)."""
    out = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add(Request(verb, group, resource))
    return out


def service_account(docs: Iterable[dict]) -> tuple[str, str]:
    [sa] = [d for d in docs if d["kind"] == "ServiceAccount"]
    return sa["metadata"]["namespace"], sa["metadata"]["name"]


def chart_rbac_kubeconfig(cluster, release_namespace: str = "tauon-system",
                          watch_namespaces: Iterable[str] = (), release: str = "tauon",
                          values: dict | None = None, token_duration: str = "4h") -> Path:
    """Applies only the chart's ServiceAccount, (Cluster)Roles and bindings; returns the path of
    a kubeconfig that authenticates as that ServiceAccount with a freshly minted token.

    `watch_namespaces` empty: every namespace (ClusterRole + ClusterRoleBinding). A list: a Role
    and RoleBinding in each (created if missing) plus the small cluster-scoped ClusterRole; run
    the operator with the same list (TAUON_NAMESPACES or --namespace).

    Cluster-scoped objects are named after `release`: use one release name per
    release_namespace in a session (a second namespace under the same name re-points the
    ClusterRoleBinding)."""
    watch = list(watch_namespaces)
    docs = rbac_objects(render(release, release_namespace,
                               {**(values or {}), "watchNamespaces": watch}))
    for ns in [release_namespace, *watch]:
        if cluster.kubectl("get", "namespace", ns, check=False).returncode != 0:
            cluster.kubectl("create", "namespace", ns, check=False)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tauon-chart-test",
                    "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    sa_ns, sa_name = service_account(docs)
    token = cluster.kubectl("create", "token", sa_name, "-n", sa_ns,
                            f"--duration={token_duration}").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{sa_ns}:{sa_name}"
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "tauon-local", "cluster": server}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "tauon-operator", "context": {
            "cluster": "tauon-local", "user": user, "namespace": sa_ns}}],
        "current-context": "tauon-operator",
    }
    path = Path(cluster.state_dir) / f"chart-rbac-{release}-{sa_ns}-{'-'.join(watch) or 'all'}.kubeconfig"[:200]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    # The authorizer's cache catches up within moments; return once the token works.
    probe = ["auth", "can-i", "watch", "jobs.batch"]  # known with or without our CRDs
    probe += ["-n", watch[0]] if watch else ["--all-namespaces"]
    deadline = time.monotonic() + 30
    while cluster.kubectl(*probe, kubeconfig=path, check=False).stdout.strip() != "yes":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chart's RBAC for {user} did not take effect")
        time.sleep(0.2)
    return path
