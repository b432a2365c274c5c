"""Kueue: a TrainingJob labelled `kueue.x-k8s.io/queue-name` runs when Kueue admits it.

Kueue's built-in batch/Job integration does the queueing: the worker Job carries the label, is
created suspended, and Kueue turns it into one Workload (one pod set of `workers` pods: all of
them are admitted, or none), admits it against its ClusterQueue's quota from the pods'
requests, resumes it (injecting its flavor's node labels), and suspends it again to preempt it.
The operator never sets `suspend` on such a Job after creating it, and reads what Kueue decided
from the Workload it made for the Job. The functions here are pure: the reconcile hands them
the Job and its Workload from the cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Labels a TrainingJob passes to its worker Job for Kueue (the queue, a WorkloadPriorityClass).
PASSED_LABELS = (QUEUE_LABEL, "kueue.x-k8s.io/priority-class")
WORKLOAD_API = "kueue.x-k8s.io/v1beta2"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job
ADMITTED = "Admitted"  # the TrainingJob's condition, as Kueue's Workload names it


@dataclass(frozen=True)
class Admission:
    """What Kueue decided about a run: `state` is Queued, Admitted or Preempted."""

    state: str
    message: str

    @property
    def admitted(self) -> bool:
        return self.state == "Admitted"


def queue_labels(tj: Mapping[str, Any]) -> dict[str, str]:
    labels = tj["metadata"].get("labels") or {}
    return {k: labels[k] for k in PASSED_LABELS if labels.get(k)}


def queue_name(obj: Mapping[str, Any] | None) -> str | None:
    """The Kueue queue a TrainingJob or its Job is in (None: not queued)."""
    return ((obj or {}).get("metadata", {}).get("labels") or {}).get(QUEUE_LABEL) or None


def _condition(wl: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((wl or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def _true(c: Mapping[str, Any] | None) -> bool:
    return bool(c) and c.get("status") == "True"  # type: ignore[union-attr]


def admission(job: Mapping[str, Any], workload: Mapping[str, Any] | None) -> Admission:
    """Kueue's decision for a queued Job, in Kueue's words. A Job Kueue has resumed is
    admitted (the Workload may lag behind its Job by a moment); a suspended one is waiting:
    preempted when its Workload was evicted to make room (Kueue sets Evicted and Preempted and
    clears them when it admits the Workload again), else queued with Kueue's reason (the quota
    it lacks, the queue that does not exist …)."""
    queue = queue_name(job)
    cq = (((workload or {}).get("status") or {}).get("admission") or {}).get("clusterQueue")
    if not job.get("spec", {}).get("suspend"):
        where = f"ClusterQueue {cq}" if cq else f"queue {queue}"
        return Admission("Admitted", f"admitted by Kueue ({where})")
    evicted, preempted = _condition(workload, "Evicted"), _condition(workload, "Preempted")
    pending = _condition(workload, "QuotaReserved")
    waiting = (pending or {}).get("message") if not _true(pending) else None
    if _true(preempted) or (_true(evicted) and (evicted or {}).get("reason") == "Preempted"):
        why = (preempted if _true(preempted) else evicted) or {}
        msg = f"preempted by Kueue: {why.get('message') or why.get('reason')}"
        msg += f"; waiting in queue {queue} again" + (f" ({waiting})" if waiting else "")
        return Admission("Preempted", msg + "; resumes from the latest checkpoint")
    if _true(evicted):
        return Admission("Queued", f"evicted by Kueue: {(evicted or {}).get('message')}")
    if workload is None:
        return Admission(
            "Queued",
            f"waiting for Kueue to admit it from queue {queue} (no Workload yet: is Kueue "
            "installed, with the batch/job integration?)",
        )
    if waiting:
        return Admission("Queued", f"waiting in queue {queue}: {waiting}")
    return Admission("Queued", f"waiting in queue {queue}")


def workload_of(store: Any, job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The Workload Kueue made for `job` (found in the cache by the job-uid label Kueue puts on
    it), or None: not queued, not made yet, or Kueue not installed."""
    if job is None or not queue_name(job):
        return None
    meta = job["metadata"]
    found = store.select("Workload", meta["namespace"], {JOB_UID_LABEL: meta.get("uid", "")})
    return found[0] if found else None
