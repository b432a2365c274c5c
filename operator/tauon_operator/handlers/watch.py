"""The watch streams: every event updates the cache and enqueues the reconciles it concerns.
Kopf watches the custom resources; informers (informer.py) watch the children."""

from __future__ import annotations

import asyncio

import kopf

from tauon_operator import queueing, relevance
from tauon_operator.api import GROUP, VERSION
from tauon_operator.handlers import dataset, modeldeployment, trainingjob
from tauon_operator.informer import LISTED, Informer, wait_synced
from tauon_operator.kube import Kube
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
        if (
            tj["metadata"]["namespace"] == ns
            and (tj["spec"].get("datasetRef") or {}).get("name") == name
        ):
            ctl.enqueue("TrainingJob", ns, tj["metadata"]["name"])
    for ds in ctl.store.all("Dataset"):  # a Dataset built on this one's version
        if ds["metadata"]["namespace"] == ns and dataset.base_of(ds) == name:
            ctl.enqueue("Dataset", ns, ds["metadata"]["name"])
    _enqueue_owner(ns, body)


def _enqueue_owner(ns: str, body) -> None:
    """A retraining round's Dataset or TrainingJob: its ModelDeployment reads its status."""
    owner = (body["metadata"].get("labels") or {}).get(PARENT_LABEL["ModelDeployment"])
    if owner:
        controller().enqueue("ModelDeployment", ns, owner)


@kopf.on.event(GROUP, VERSION, "trainingjobs")
async def trainingjob_event(type, body, **_):
    ns, name = _observe("TrainingJob", type, body)
    ctl = controller()
    ctl.enqueue("TrainingJob", ns, name)
    for md in ctl.store.all("ModelDeployment"):
        if md["metadata"]["namespace"] == ns and modeldeployment.follows(md, name):
            ctl.enqueue("ModelDeployment", ns, md["metadata"]["name"])
    _enqueue_owner(ns, body)


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def modeldeployment_event(type, body, **_):
    ns, name = _observe("ModelDeployment", type, body)
    controller().enqueue("ModelDeployment", ns, name)


def child_event(kind: str, type_: str, body: dict) -> None:
    """An informer's event for a child: into the cache; its parent enqueued if it matters."""
    ctl = controller()
    if type_ == LISTED:  # the cache filling before any reconcile: kopf enqueues every parent
        ctl.store.observe(kind, "ADDED", body)
        return
    ns = body["metadata"]["namespace"]
    old = ctl.store.get(kind, ns, body["metadata"]["name"])
    if not ctl.store.observe(kind, type_, body):
        return  # the echo of our own write: its parent already reconciled with it
    if type_ == "DELETED":
        body = old or body  # a relist's DELETED carries the name only
    elif not relevance.matters(kind, old, body):
        return  # a change the parent's reconcile does not read (a binding, a counter, a heartbeat)
    if kind == "Workload":  # Kueue's object, not ours: it stands for one of our Jobs
        owners = body["metadata"].get("ownerReferences") or []
        jobs = [ctl.store.get("Job", ns, o["name"]) for o in owners if o.get("kind") == "Job"]
        body = next((j for j in jobs if j is not None), {"metadata": {}})
    labels = body["metadata"].get("labels") or {}
    for parent, label in PARENT_LABEL.items():
        if label in labels:
            ctl.enqueue(parent, ns, labels[label])


# Every kind the operator creates, (apiVersion, kind): informers stream them into the cache, so
# what exists is compared with what is desired (a child deleted by someone else is recreated,
# an owned field edited is put back) and pruning sees it.
CHILDREN = (
    ("batch/v1", "Job"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())  # only our own children
# Kueue's Workloads, when Kueue is installed: what it decided about a queued run. Kueue labels
# them with the Job's uid, not with ours, so they are all watched (read only).
WORKLOADS = (queueing.WORKLOAD_API, "Workload")


def start_informers(
    kube: Kube, namespaces: tuple[str, ...] = (), kueue: bool = False
) -> list[Informer]:
    """One informer per child kind and namespace; with `kueue`, Kueue's Workloads too."""
    ctl, loop = controller(), asyncio.get_running_loop()
    kinds: list[tuple[str, str, str | None]] = [(api, kind, SELECTOR) for api, kind in CHILDREN]
    if kueue:
        kinds.append((*WORKLOADS, None))
    return [
        Informer(
            kube,
            loop,
            api_version,
            kind,
            ns,
            selector,
            child_event,
            lambda kind=kind, ns=ns: ctl.store.keys(kind, ns),  # type: ignore[misc]
        ).start()
        for api_version, kind, selector in kinds
        for ns in namespaces or (None,)
    ]


async def load_cache(informers: list[Informer], namespaces: tuple[str, ...] = ()) -> None:
    """No reconcile before the cache holds what is there (an informer's WaitForCacheSync): a
    reconcile that cannot see a Dataset, a TrainingJob or a child only because it was not
    listed yet would regress a status or delete a child. The children's informers list
    first; the custom resources are listed here, and kopf's watches of them, starting after,
    repeat what is cached and enqueue every one."""
    ctl = controller()
    scopes: tuple[str | None, ...] = namespaces or (None,)
    parents = [(kind, ns) for kind in RECONCILERS for ns in scopes]
    lists = await asyncio.gather(
        *(ctl.kube.list_objects(f"{GROUP}/{VERSION}", kind, ns) for kind, ns in parents)
    )
    for (kind, _), items in zip(parents, lists, strict=True):
        for item in items:
            ctl.store.observe(kind, "ADDED", item)
    await wait_synced(informers)


RECONCILERS = {
    "Dataset": dataset.reconcile,
    "TrainingJob": trainingjob.reconcile,
    "ModelDeployment": modeldeployment.reconcile,
}
