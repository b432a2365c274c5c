"""TrainingJob: waits for its Dataset, runs the worker group, restarts it from the latest
checkpoint when a worker fails, and records the exported model."""

from __future__ import annotations

from pydantic import ValidationError
from tauon_runtime.contract.keys import ATTEMPT_LABEL

from tauon_operator.builders import trainingjob as build
from tauon_operator.controller import Controller, utcnow
from tauon_operator.meta import PARENT_LABEL
from tauon_operator.status.trainingjob import attempt, deadline_left, trainingjob_plan

KIND = "TrainingJob"


async def reconcile(ctl: Controller, namespace: str, name: str) -> None:
    tj = ctl.store.get(KIND, namespace, name)
    if tj is None or tj["metadata"].get("deletionTimestamp"):
        return
    now = utcnow()
    n = attempt(tj)
    dataset = ctl.store.get("Dataset", namespace, tj["spec"]["datasetRef"]["name"])
    job = ctl.store.get("Job", namespace, build.worker_job_name(tj, n))
    pods = ctl.store.select("Pod", namespace, {PARENT_LABEL[KIND]: name, ATTEMPT_LABEL: str(n)})
    location = f"pvc://{build.output_claim_name(tj)}/{build.MODEL_SUBDIR}"
    plan = trainingjob_plan(tj, dataset, job, pods, now, location)

    if plan.apply_children:
        try:
            children = build.build(tj, ctl.settings, n, deadline_left(tj, now))
        except (ValidationError, ValueError) as e:
            await ctl.invalid_spec(tj, str(e), now.strftime("%Y-%m-%dT%H:%M:%SZ"))
            return
        await ctl.ensure(children)
    changed = await ctl.write_status(tj, plan.status)
    if (plan.restart or plan.stop) and job is not None:
        # The status (with the new attempt number) is written first: a crash here resumes
        # with the next attempt instead of counting the same failure twice.
        await ctl.delete("batch/v1", "Job", namespace, job["metadata"]["name"])
    if changed:
        for type_, reason, message in plan.events:
            ctl.event(tj, type_, reason, message)
