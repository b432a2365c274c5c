"""TrainingJob: waits for its Dataset, runs the worker group, restarts it from the latest
checkpoint when a worker fails, and records the exported model."""

from __future__ import annotations

from pydantic import ValidationError

from tauon_operator import queueing
from tauon_operator.builders import pod
from tauon_operator.builders import trainingjob as build
from tauon_operator.controller import Controller, Outcome, utcnow
from tauon_operator.meta import PARENT_LABEL
from tauon_operator.status.trainingjob import (
    attempt,
    deadline_left,
    trainingjob_plan,
    unapplied,
    with_unapplied_change,
)
from tauon_runtime.contract.keys import ATTEMPT_LABEL

KIND = "TrainingJob"


async def reconcile(ctl: Controller, namespace: str, name: str) -> None:
    tj = ctl.store.get(KIND, namespace, name)
    if tj is None or tj["metadata"].get("deletionTimestamp"):
        return
    # observe
    now = utcnow()
    n = attempt(tj)
    dataset = ctl.store.get("Dataset", namespace, tj["spec"]["datasetRef"]["name"])
    job = ctl.store.get("Job", namespace, build.worker_job_name(tj, n))
    pods = ctl.store.select("Pod", namespace, {PARENT_LABEL[KIND]: name, ATTEMPT_LABEL: str(n)})
    location = f"pvc://{build.output_claim_name(tj)}/{build.MODEL_SUBDIR}"
    # plan status
    workload = queueing.workload_of(ctl.store, job)
    plan = trainingjob_plan(tj, dataset, job, pods, now, location, workload)
    # build
    children = None
    if plan.apply_children:
        try:
            children = build.build(tj, ctl.settings, n, deadline_left(tj, now))
        except (ValidationError, ValueError) as e:
            await ctl.invalid_spec(tj, str(e))
            return
    status = plan.status
    if children is not None and job is not None and not plan.restart:
        desired = next(c for c in children if c["kind"] == "Job")
        status = with_unapplied_change(status, unapplied(desired, job), n, now)
    # A restart writes the next attempt number before the failed Job goes: a crash in between
    # resumes with the next attempt instead of counting the same failure twice.
    stop = (plan.restart or plan.stop) and job is not None
    await ctl.sync(
        tj,
        Outcome(
            status=status,
            children=children,
            updates=pod.UPDATES,
            status_first=plan.restart,
            delete_after_status=(("Job", job["metadata"]["name"]),) if stop and job else (),
            events=plan.events,
        ),
    )
