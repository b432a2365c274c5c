"""What of a child its parent's reconcile reads: a watch event that changes none of it (a pod
bound to a node, a Job's `active` counter, a claim's binding, a condition's heartbeat) does
not need the parent reconciled again.

`project(kind, obj)` is the part of a child that matters to its parent: what the operator owns
on it (spec, data, rules, our labels and annotations — so drift is seen), whether it is being
deleted, and the status fields the status rules in `status/` read. Two versions with equal
projections are the same to the parent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tauon_runtime.contract.keys import SPEC_HASH_ANNOTATION

_OURS = SPEC_HASH_ANNOTATION.split("/", 1)[0] + "/"  # our annotation prefix: tauon.dev/
_TIMESTAMPS = ("lastHeartbeatTime", "lastProbeTime", "lastTransitionTime", "lastUpdateTime")


def _meta(obj: Mapping[str, Any]) -> tuple:
    m = obj["metadata"]
    ours = {k: v for k, v in (m.get("annotations") or {}).items() if k.startswith(_OURS)}
    return (
        m.get("labels") or {},
        ours,
        [o.get("uid") for o in m.get("ownerReferences") or []],
        m.get("deletionTimestamp"),
    )


def _conditions(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in c.items() if k not in _TIMESTAMPS} for c in status.get("conditions") or []
    ]


def _body(obj: Mapping[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything but metadata and status: spec, data, rules, subjects, roleRef …"""
    return {
        k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status", *drop)
    }


def _ended(t: Mapping[str, Any] | None) -> tuple | None:
    return (t.get("exitCode"), t.get("reason"), t.get("message")) if t else None


def _container(cs: Mapping[str, Any]) -> tuple:
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    # A config error's message names what is missing (a Secret, a ConfigMap); a back-off's
    # message only counts seconds.
    why = waiting.get("message") if waiting.get("reason") == "CreateContainerConfigError" else None
    return (
        cs.get("name"),
        cs.get("ready"),
        cs.get("restartCount"),
        waiting.get("reason"),
        why,
        _ended(state.get("terminated")),
        _ended((cs.get("lastState") or {}).get("terminated")),
    )


def _pod(obj: Mapping[str, Any]) -> tuple:
    # A pod is the Job's (or the ReplicaSet's) child, not ours to repair: only its state counts.
    st = obj.get("status") or {}
    return (
        _meta(obj),
        st.get("phase"),
        st.get("reason"),
        _conditions(st),
        [_container(cs) for cs in st.get("initContainerStatuses") or []],
        [_container(cs) for cs in st.get("containerStatuses") or []],
    )


def _job(obj: Mapping[str, Any]) -> tuple:
    st = obj.get("status") or {}
    # `ready`, `terminating`, `startTime`: the status rules read those from the pods.
    return (
        _meta(obj),
        _body(obj),
        st.get("active"),
        st.get("succeeded"),
        st.get("failed"),
        _conditions(st),
    )


def _deployment(obj: Mapping[str, Any]) -> tuple:
    st = obj.get("status") or {}
    return (_meta(obj), _body(obj), {**st, "conditions": _conditions(st)})


def _claim(obj: Mapping[str, Any]) -> tuple:
    # The volume binder writes spec.volumeName and its annotations; the claim is ours unchanged.
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k != "volumeName"}
    return (_meta(obj), spec)


def _workload(obj: Mapping[str, Any]) -> tuple:
    # Kueue's decision: its conditions and where it admitted the run, not its bookkeeping.
    st = obj.get("status") or {}
    return (_meta(obj), _conditions(st), (st.get("admission") or {}).get("clusterQueue"))


def _default(obj: Mapping[str, Any]) -> tuple:
    return (_meta(obj), _body(obj))


_PROJECTIONS: dict[str, Callable[[Mapping[str, Any]], tuple]] = {
    "Pod": _pod,
    "Job": _job,
    "Deployment": _deployment,
    "PersistentVolumeClaim": _claim,
    "Workload": _workload,
}


def project(kind: str, obj: Mapping[str, Any]) -> tuple:
    return _PROJECTIONS.get(kind, _default)(obj)


def matters(kind: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether the change from `old` (None: not seen before) to `new` concerns the parent."""
    return old is None or project(kind, old) != project(kind, new)
