"""Helpers for tests against the local control plane: polling, reading objects, ending kwok
pods, and the operator running in this process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def wait_for(check, timeout: float = 60, interval: float = 0.25, what: str = "condition"):
    """Polls `check` until it returns something truthy; returns that value or fails the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def install_crds(cluster) -> list[str]:
    """Installs the generated CRDs and waits until the API server serves them."""
    import re

    files = sorted((REPO / "crds").glob("*.yaml"))
    if not files:
        pytest.fail("crds/ is empty: run `make crds`")
    for f in files:
        cluster.kubectl("apply", "--server-side", "-f", str(f))
    for f in files:
        name = re.search(r"^  name: (\S+)", f.read_text(), re.M).group(1)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return [f.name for f in files]


def new_namespace(cluster, name: str, timeout: float = 60) -> str:
    """Creates a namespace and waits for its `default` ServiceAccount (pods need it)."""
    cluster.kubectl("create", "namespace", name)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
             timeout=timeout, what=f"the default ServiceAccount in {name}")
    return name


def apply_objects(cluster, namespace: str, *objs: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input="\n---\n".join(json.dumps(o) for o in objs))


def succeed_with_model(cluster, namespace: str, name: str, sha: str, accuracy: float = 0.97) -> None:
    """Ends a running TrainingJob the way the runtime does: its model reported, its pods exit 0."""
    wait_phase(cluster, "tj", name, namespace, "Running")
    cluster.kubectl("patch", "tj", name, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"model": {"sha256": sha,
                                                           "metrics": {"accuracy": accuracy}}}}))
    finish_pods(cluster, namespace, f"tauon.dev/trainingjob={name}")
    wait_phase(cluster, "tj", name, namespace, "Succeeded")


def remove(cluster, namespace: str, *targets: str) -> None:
    """Deletes what a test module created (`-f <dir>` or `kind/name`), not waiting: the node
    agent has this machine's two CPUs, and a server left running keeps the next module's
    training pod Pending."""
    for target in targets:
        if (Path(target) / "kustomization.yaml").exists():
            args: tuple[str, ...] = ("-k", target)
        else:
            args = ("-f", target) if Path(target).exists() else (target,)
        cluster.kubectl("delete", "-n", namespace, *args, "--wait=false", "--ignore-not-found",
                        check=False)


def get_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


class OperatorProcess:
    """The operator running in this process (kopf's test runner), startable and stoppable."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.runner = None

    def start(self) -> "OperatorProcess":
        import os

        from kopf.testing import KopfRunner

        os.environ.update({"KUBECONFIG": str(self.kubeconfig), "TAUON_METRICS_PORT": "0",
                           "TAUON_HEALTH_PORT": "0"})
        self.runner = KopfRunner(["run", "--all-namespaces", "--standalone",
                                  "-m", "tauon_operator.main"], timeout=60)
        self.runner.__enter__()
        return self

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
            self.runner = None


def status_of(cluster, kind: str, name: str, namespace: str) -> dict:
    res = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(res.stdout).get("status", {}) if res.returncode == 0 else {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def wait_phase(cluster, kind: str, name: str, namespace: str, phase: str, timeout: float = 60) -> dict:
    """Waits for a phase; fails at once, with the reason, on a different terminal phase."""
    last: dict = {}

    def check():
        nonlocal last
        last = status_of(cluster, kind, name, namespace)
        if last.get("phase") in ("Succeeded", "Failed") and last["phase"] != phase:
            pytest.fail(f"{kind} {name} ended {last['phase']} while waiting for {phase}: "
                        f"{condition(last, 'Ready')}")
        return last.get("phase") == phase and last

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {kind} {name} phase {phase}; "
                f"phase {last.get('phase')}: {condition(last, 'Ready')}")


def finish_pods(cluster, namespace: str, selector: str, code: int = 0, count: int | None = None) -> list[str]:
    """Ends kwok pods the way a container would: with an exit code."""
    def running():
        pods = get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]
        live = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
        return live if live and (count is None or len(live) >= count) else None
    names = wait_for(running, what=f"running pods {selector}")
    for name in names[:count] if count else names:
        cluster.kubectl("annotate", "pod", name, "-n", namespace, f"sim.tauon.dev/exit-code={code}")
    return names


def normalised(value):
    """A spec as compared across the API server and the models: quantities are `2` on the
    server and "2" in pydantic, so numbers and numeric strings compare as floats."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def post_json(url: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
    """POST a JSON body as a user's client would; (status, JSON answer), errors included."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
