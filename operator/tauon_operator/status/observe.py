"""Reading what Kubernetes says about Jobs and Pods: shared by every status rule."""

from __future__ import annotations

import json
from typing import Any


def job_condition(job: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (job or {}).get("status", {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def job_finished(job: dict[str, Any] | None) -> str | None:
    """'Complete', 'Failed' or None."""
    if job_condition(job, "Complete"):
        return "Complete"
    if job_condition(job, "Failed"):
        return "Failed"
    return None


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        state = cs.get("state", {})
        if "terminated" in state:
            return state["terminated"]
    return None


def termination_result(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The runtime writes its result as JSON to the termination log; kubelet puts it here."""
    return result_of(terminated(pod))


def result_of(t: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result JSON in one container's `terminated` state (its termination message)."""
    if not t or not t.get("message"):
        return None
    try:
        value = json.loads(t["message"])
    except json.JSONDecodeError:
        return {"message": t["message"].strip()[-2000:]}
    return value if isinstance(value, dict) else None


def failed_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if p.get("status", {}).get("phase") == "Failed"]


def exit_codes(pods: list[dict[str, Any]]) -> set[int]:
    return {t["exitCode"] for p in pods if (t := terminated(p)) and "exitCode" in t}


def scheduling_problem(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) for a pod the scheduler cannot place, whose image cannot be pulled, or
    whose container the kubelet cannot create (a missing Secret or ConfigMap)."""
    for p in pods:
        st = p.get("status", {})
        for c in st.get("conditions") or []:
            if (
                c.get("type") == "PodScheduled"
                and c.get("status") == "False"
                and c.get("reason") == "Unschedulable"
            ):
                message = c.get("message", "")
                if "unbound immediate PersistentVolumeClaims" in message:
                    # A claim still being provisioned: a wait, not a problem to report.
                    return "WaitingForVolume", f"pod {p['metadata']['name']}: {message}"
                return "Unschedulable", f"pod {p['metadata']['name']}: {message}"
        for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
            waiting = cs.get("state", {}).get("waiting") or {}
            if waiting.get("reason") == "CreateContainerConfigError":
                # e.g. the artifact store's credentials Secret is missing in this namespace
                return "CreateContainerConfigError", (
                    f"pod {p['metadata']['name']}: {cs.get('name')}: {waiting.get('message', '')}"
                )
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                return "ImagePullBackOff", (
                    f"pod {p['metadata']['name']}: cannot pull image "
                    f"{cs.get('image')}: {waiting.get('message', '')}"
                )
    return None


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """core/v1 Toleration.ToleratesTaint."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _selected(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in (pod_spec.get("nodeSelector") or {}).items())


def untolerated_taints(pod: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    """The taints (key=value:Effect, each once) on the nodes the pod's nodeSelector allows that
    the pod does not tolerate: what the scheduler's "had untolerated taint(s)" leaves unsaid."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for node in nodes:
        if not _selected(spec, node):
            continue
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(
                spec.get("tolerations") or [], taint
            ):
                value = f"={taint['value']}" if taint.get("value") else ""
                text = f"{taint.get('key')}{value}:{taint.get('effect')}"
                if text not in out:
                    out.append(text)
    return out


def untolerated(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first pod the scheduler refused for a taint it does not tolerate, if any."""
    for p in pods:
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("reason") == "Unschedulable" and "untolerated taint" in c.get("message", ""):
                return p
    return None


def naming_taints(pods: list[dict[str, Any]], taints: list[str]) -> list[dict[str, Any]]:
    """The pods with the refused pod's scheduling message naming `taints`."""
    refused = untolerated(pods)
    if refused is None or not taints:
        return pods
    conds = [
        {**c, "message": f"{c.get('message', '')} (untolerated: {', '.join(taints)})"}
        if c.get("reason") == "Unschedulable"
        else c
        for c in refused["status"]["conditions"]
    ]
    named = {**refused, "status": {**refused["status"], "conditions": conds}}
    return [named if p is refused else p for p in pods]
