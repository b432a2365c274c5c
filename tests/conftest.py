"""Shared fixtures. The control plane is real (hack/localkube) and started once per session,
only when a test asks for it; unit tests never start it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from localkube import Cluster
from operator_rbac import chart_rbac_kubeconfig

from kubetest import (  # noqa: F401 - re-exported for tests that import conftest
    OperatorProcess, condition, finish_pods, get_json, install_crds, new_namespace, status_of,
    wait_for, wait_phase)

REPO = Path(__file__).resolve().parent.parent
# The modules whose pods really run on a node agent (the `platform` fixture's, and the Kueue
# module's own cluster): `make test`'s two workers (`--dist loadfile`) take every other module
# whole, but these all go to one worker, one after another. The node agent has this machine's
# two CPUs; two such modules at once (trainers, servers and a browser on each worker's
# platform) starve each other's servers.
NODE_AGENT_MODULES = ("tests/e2e/", "tests/integration/test_kueue.py",
                      "tests/integration/test_prometheus.py")


def _scope(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return "node-agent" if path.startswith(NODE_AGENT_MODULES) else path


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class NodeAgentModulesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return NodeAgentModulesTogether(config, log)


def pytest_collection_modifyitems(config, items):
    strays = sorted({i.nodeid.split("::")[0] for i in items
                     if "platform" in i.fixturenames and _scope(i.nodeid) != "node-agent"})
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use the platform: list them in "
                                "tests/conftest.py NODE_AGENT_MODULES")


@pytest.fixture(scope="session")
def cluster():
    """A real control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler,
    kwok with 4 simulated nodes of 8 GPUs, and a local-directory volume provisioner."""
    with Cluster.start() as c:
        yield c


@pytest.fixture(scope="session")
def crds(cluster):
    """Installs the generated CRDs and waits until the API server serves them."""
    return install_crds(cluster)


@pytest.fixture
def namespace(cluster, request):
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    yield new_namespace(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster, crds) -> Path:
    """The identity the in-process operator runs as: exactly the RBAC the Helm chart ships, so
    every operator test also proves those rules are enough."""
    return chart_rbac_kubeconfig(cluster)


@pytest.fixture(scope="session")
def tauon_operator(operator_kubeconfig):
    op = OperatorProcess(operator_kubeconfig).start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def platform_metrics_port(platform) -> int:
    """Where the platform's operator serves its Prometheus metrics (tests/integration/test_prometheus.py)."""
    return platform.operator_metrics_port


@pytest.fixture(scope="session")
def platform():
    """The whole platform on this machine: the control plane, kwok GPU nodes (tainted), a node
    agent that really runs pods, the CRDs, and the operator as its own process with exactly the
    chart's RBAC."""
    import localplatform

    cluster = localplatform.start(operator=False)
    try:
        cluster.operator_metrics_port = localplatform.start_operator(
            cluster, chart_rbac_kubeconfig(cluster), metrics=True)
        yield cluster
    finally:
        cluster.stop()
