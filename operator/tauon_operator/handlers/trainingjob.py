"""TrainingJob: waits for its Dataset, runs the worker group, restarts it from the latest
checkpoint when a worker fails, and records the exported model."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tauon_operator import queueing
from tauon_operator.builders import pod
from tauon_operator.builders import trainingjob as build
from tauon_operator.controller import Controller, Outcome, utcnow
from tauon_operator.meta import PARENT_LABEL
from tauon_operator.status import observe
from tauon_operator.status.trainingjob import (
    attempt,
    deadline_left,
    trainingjob_plan,
    unapplied,
    with_unapplied_change,
)
from tauon_runtime.contract.keys import ATTEMPT_LABEL

KIND = "TrainingJob"
log = logging.getLogger("tauon.trainingjob")


async def reconcile(ctl: Controller, namespace: str, name: str) -> None:
    tj = ctl.store.get(KIND, namespace, name)
    if tj is None or tj["metadata"].get("deletionTimestamp"):
        return
    # observe
    now = utcnow()
    n = attempt(tj)
    ref = tj["spec"].get("datasetRef")
    dataset = ctl.store.get("Dataset", namespace, ref["name"]) if ref else None
    job = ctl.store.get("Job", namespace, build.worker_job_name(tj, n))
    pods = ctl.store.select("Pod", namespace, {PARENT_LABEL[KIND]: name, ATTEMPT_LABEL: str(n)})
    if (refused := observe.untolerated(pods)) is not None:
        pods = observe.naming_taints(pods, await untolerated_taints(ctl, refused))
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


async def untolerated_taints(ctl: Controller, refused: dict[str, Any]) -> list[str]:
    """The taints a worker the scheduler refused does not tolerate, on the nodes its
    nodeSelector allows (read when it happens, not watched: nodes are many and rarely the
    question). [] when nodes cannot be read."""
    selector = refused.get("spec", {}).get("nodeSelector") or {}
    try:
        nodes = await ctl.kube.list_objects(
            "v1", "Node", None, ",".join(f"{k}={v}" for k, v in selector.items()) or None
        )
    except (ApiException, OSError) as e:
        log.info("cannot list nodes to name the taints: %s", e)
        return []
    return observe.untolerated_taints(refused, nodes)
