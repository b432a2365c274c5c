"""Dataset: a claim and a prepare Job; Ready once the runtime has prepared and described it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tauon_operator.builders import dataset as build
from tauon_operator.builders import pod
from tauon_operator.controller import Controller, Outcome, phase_events, utcnow
from tauon_operator.meta import PARENT_LABEL
from tauon_operator.status.dataset import dataset_status, waiting_status

KIND = "Dataset"


def base_of(ds: dict[str, Any]) -> str | None:
    """The base Dataset a feedback source builds on, or None."""
    feedback = ((ds.get("spec") or {}).get("source") or {}).get("feedback") or {}
    return (feedback.get("baseDatasetRef") or {}).get("name")


def resolve_base(
    ctl: Controller, ds: dict[str, Any]
) -> tuple[build.BaseVersion | None, tuple[str, str, bool]]:
    """The base version to build on, or (None, (reason, message, stalled)) while there is none."""
    name, ns = base_of(ds), ds["metadata"]["namespace"]
    if not ctl.settings.store_bucket:
        return None, (
            "StoreRequired",
            "a feedback source needs the artifact store (the chart's store.bucket): feedback "
            "and the base version are read from it",
            True,
        )
    base = ctl.store.get(KIND, ns, name or "")
    if base is None:
        return None, ("BaseDatasetNotFound", f"Dataset {name!r} does not exist in {ns}", False)
    st = base.get("status") or {}
    if st.get("phase") != "Ready" or not st.get("location") or not st.get("digest"):
        return None, (
            "WaitingForBaseDataset",
            f"waiting for Dataset {name!r} to be Ready with a version in the artifact store",
            False,
        )
    return build.BaseVersion(st["location"], st["digest"]), ("", "", False)


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
    base = None
    if base_of(ds) is not None:
        base, waiting = resolve_base(ctl, ds)
        if base is None and job is None:  # nothing prepared yet: say what it waits for
            status = waiting_status(ds, *waiting, utcnow())
            events = phase_events(status, warn=("Failed",))
            await ctl.sync(ds, Outcome(status=status, children=None, events=events))
            return
    try:
        # A feedback source whose base went away keeps the version it prepared (no children
        # rewritten until the base is back).
        keep_as_is = base_of(ds) is not None and base is None
        children = None if keep_as_is else build.build(ds, ctl.settings, base)
    except (ValidationError, ValueError) as e:
        await ctl.invalid_spec(ds, str(e))
        return
    events = phase_events(status, warn=("Failed",))
    await ctl.sync(
        ds, Outcome(status=status, children=children, updates=pod.UPDATES, events=events)
    )
