"""Dataset: a claim and a prepare Job; Ready once the runtime has prepared and described it."""

from __future__ import annotations

from pydantic import ValidationError

from tauon_operator.builders import dataset as build
from tauon_operator.builders import pod
from tauon_operator.controller import Controller, Outcome, phase_events, utcnow
from tauon_operator.meta import PARENT_LABEL
from tauon_operator.status.dataset import dataset_status

KIND = "Dataset"


async def reconcile(ctl: Controller, namespace: str, name: str) -> None:
    ds = ctl.store.get(KIND, namespace, name)
    if ds is None or ds["metadata"].get("deletionTimestamp"):
        return  # deleted: garbage collection removes the children
    # observe
    job = ctl.store.get("Job", namespace, build.prepare_job_name(ds))
    pods = ctl.store.select(
        "Pod", namespace, {PARENT_LABEL[KIND]: name, "app.kubernetes.io/component": "prepare"}
    )
    # plan status, build
    status = dataset_status(ds, build.claim_name(ds), job, pods, utcnow())
    try:
        children = build.build(ds, ctl.settings)
    except (ValidationError, ValueError) as e:
        await ctl.invalid_spec(ds, str(e))
        return
    events = phase_events(status, warn=("Failed",))
    await ctl.sync(
        ds, Outcome(status=status, children=children, updates=pod.UPDATES, events=events)
    )
