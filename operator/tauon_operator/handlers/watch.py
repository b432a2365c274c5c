"""The watch streams: every event updates the cache and enqueues the reconciles it concerns."""

from __future__ import annotations

import asyncio

import kopf

from tauon_operator import relevance
from tauon_operator.api import GROUP, VERSION
from tauon_operator.handlers import dataset, modeldeployment, trainingjob
from tauon_operator.meta import MANAGED_BY, PARENT_LABEL
from tauon_operator.state import controller

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _observe(kind: str, type_: str | None, body) -> tuple[str, str]:
    ctl = controller()
    ctl.store.observe(kind, type_ or "ADDED", body)
    return body["metadata"]["namespace"], body["metadata"]["name"]


@kopf.on.event(GROUP, VERSION, "datasets")
async def dataset_event(type, body, **_):
    ns, name = _observe("Dataset", type, body)
    ctl = controller()
    ctl.enqueue("Dataset", ns, name)
    for tj in ctl.store.all("TrainingJob"):
        if tj["metadata"]["namespace"] == ns and tj["spec"]["datasetRef"]["name"] == name:
            ctl.enqueue("TrainingJob", ns, tj["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "trainingjobs")
async def trainingjob_event(type, body, **_):
    ns, name = _observe("TrainingJob", type, body)
    ctl = controller()
    ctl.enqueue("TrainingJob", ns, name)
    for md in ctl.store.all("ModelDeployment"):
        if md["metadata"]["namespace"] == ns and modeldeployment.follows(md, name):
            ctl.enqueue("ModelDeployment", ns, md["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def modeldeployment_event(type, body, **_):
    ns, name = _observe("ModelDeployment", type, body)
    controller().enqueue("ModelDeployment", ns, name)


def _child_event(kind: str, type_: str | None, body) -> None:
    ctl = controller()
    ns = body["metadata"]["namespace"]
    old = ctl.store.get(kind, ns, body["metadata"]["name"])
    if not ctl.store.observe(kind, type_ or "ADDED", body):
        return  # the echo of our own write: its parent already reconciled with it
    if type_ != "DELETED" and not relevance.matters(kind, old, body):
        return  # a change the parent's reconcile does not read (a binding, a counter, a heartbeat)
    labels = body["metadata"].get("labels") or {}
    for parent, label in PARENT_LABEL.items():
        if label in labels:
            controller().enqueue(parent, ns, labels[label])


def _watch_children(group: str, version: str, plural: str, kind: str) -> None:
    """Every kind the operator creates streams into the cache: what exists is compared with
    what is desired (a child deleted by someone else is recreated), and pruning sees it."""

    async def child_event(type, body, **_):
        _child_event(kind, type, body)

    child_event.__name__ = child_event.__qualname__ = f"{plural}_event"
    kopf.on.event(group, version, plural, labels=MANAGED, id=f"{plural}-cache")(child_event)


# Every kind the operator creates, (group, version, plural, kind): watched into the cache.
CHILDREN = (
    ("batch", "v1", "jobs", "Job"),
    ("", "v1", "pods", "Pod"),
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "services", "Service"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
)
for _group, _version, _plural, _kind in CHILDREN:
    _watch_children(_group, _version, _plural, _kind)
# For the API server's own filtering of those watches (main.configure).
WATCHED_CHILDREN = tuple((g, p) if g else p for g, _, p, _ in CHILDREN)


async def load_cache(namespaces: tuple[str, ...] = ()) -> None:
    """Fill the cache with everything the watches will stream before any reconcile runs (an
    informer's WaitForCacheSync): a reconcile that cannot see a Dataset, a TrainingJob or a
    child only because its watch has not listed yet would regress a status or delete a child.
    The watches' first events then repeat what is cached and enqueue the parents."""
    ctl = controller()
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    kinds = [(f"{GROUP}/{VERSION}", kind, None) for kind in RECONCILERS] + [
        (f"{g}/{v}" if g else v, kind, selector) for g, v, _, kind in CHILDREN
    ]
    scopes: tuple[str | None, ...] = namespaces or (None,)
    lists = await asyncio.gather(
        *(ctl.kube.list(av, kind, ns, sel) for av, kind, sel in kinds for ns in scopes)
    )
    for (_, kind, _), items in zip([k for k in kinds for _ in scopes], lists, strict=True):
        for item in items:
            ctl.store.observe(kind, "ADDED", item)


RECONCILERS = {
    "Dataset": dataset.reconcile,
    "TrainingJob": trainingjob.reconcile,
    "ModelDeployment": modeldeployment.reconcile,
}
