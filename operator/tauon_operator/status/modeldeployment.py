"""ModelDeployment status from the model it follows, its Deployments and their pods."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tauon_operator import conditions as c
from tauon_operator.api import CanaryStatus, ModelDeploymentStatus, ReplicaCounts
from tauon_operator.api.modeldeployment import ModelDeploymentPhase as Phase
from tauon_operator.status import observe
from tauon_runtime.contract.keys import MODEL_DIGEST_ANNOTATION, ExitCode


def model_problem(ref: str, tj: dict[str, Any] | None) -> tuple[str, str, bool] | None:
    """(reason, message, stalled) while a TrainingJob cannot give a model; None when it can."""
    if tj is None:
        return "TrainingJobNotFound", f"TrainingJob {ref!r} does not exist in this namespace", True
    st = tj.get("status") or {}
    if (st.get("model") or {}).get("sha256"):
        return None
    if st.get("phase") == "Failed":
        reason = next(
            (x.get("reason") for x in st.get("conditions") or [] if x["type"] == "Failed"), ""
        )
        return "TrainingJobFailed", f"TrainingJob {ref!r} failed ({reason}) and has no model", True
    if st.get("phase") == "Succeeded":
        return "NoModel", f"TrainingJob {ref!r} succeeded without exporting a model", True
    return "WaitingForModel", f"waiting for TrainingJob {ref!r} to export a model", False


def refused_model(pods: list[dict[str, Any]]) -> str | None:
    """The message of a serving pod that refused its model (exit code 3: the weights' digest is
    not the one asked for); it would restart and refuse again forever."""
    for p in pods:
        for cs in p.get("status", {}).get("containerStatuses") or []:
            for state in (cs.get("state") or {}, cs.get("lastState") or {}):
                t = state.get("terminated") or {}
                if t.get("exitCode") == ExitCode.REJECTED:
                    result = observe.result_of(t) or {}
                    return result.get("message") or "the serving pod refused the model's weights"
    return None


# What the storage initializer (`tauon-runtime fetch`) reports that no retry can change: the
# object is not the published digest, nothing was published there, or the URI is malformed.
PERMANENT_FETCH_ERRORS = ("ChecksumMismatch", "ModelNotPublished", "InvalidModelURI")


def pod_problem(pods: list[dict[str, Any]]) -> tuple[Phase, str, str, bool] | None:
    """(phase, reason, message, stalled) for serving pods that cannot start: the storage
    initializer failed (with the reason it wrote), or the kubelet cannot create a container (a
    Secret or ConfigMap it references is missing). The kubelet would retry forever; the status
    says why at once."""
    for p in pods:
        if p["metadata"].get("deletionTimestamp"):
            continue
        name = p["metadata"]["name"]
        st = p.get("status") or {}
        for cs in st.get("initContainerStatuses") or []:
            state = cs.get("state") or {}
            if (state.get("terminated") or {}).get("exitCode") == 0:
                continue  # fetched (an earlier failure in lastState is over)
            for t in (state.get("terminated"), (cs.get("lastState") or {}).get("terminated")):
                if t and t.get("exitCode"):
                    result = observe.result_of(t) or {}
                    reason = str(result.get("error") or "ModelFetchFailed")
                    detail = result.get("message") or f"exit code {t.get('exitCode')}"
                    message = f"pod {name}: {cs['name']}: {detail}"
                    if reason in PERMANENT_FETCH_ERRORS:
                        return Phase.FAILED, reason, message, True
                    return Phase.DEGRADED, reason, message, False
        for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "CreateContainerConfigError":
                message = f"pod {name}: {cs['name']}: {waiting.get('message', '')}"
                return Phase.DEGRADED, "CreateContainerConfigError", message, False
    return None


def _rolled_out(dep: dict[str, Any] | None, want: int, digest: str) -> tuple[bool, int, int]:
    """(complete, ready, updated) of one Deployment against the digest it should serve."""
    if dep is None:
        return want == 0, 0, 0
    st = dep.get("status") or {}
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    ready, updated = st.get("readyReplicas", 0), st.get("updatedReplicas", 0)
    complete = (
        annotations.get(MODEL_DIGEST_ANNOTATION) == digest
        and st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
        and updated >= want
        and st.get("availableReplicas", 0) >= want
        and st.get("replicas", 0) == updated  # no pod of the old model left
    )
    return complete, ready, updated


def modeldeployment_status(
    md: dict[str, Any],
    url: str,
    want: tuple[int, int],
    digest: str | None,
    canary_digest: str | None,
    stable: dict[str, Any] | None,
    canary: dict[str, Any] | None,
    problem: tuple[str, str, bool] | None,
    now: datetime,
    pods: list[dict[str, Any]] | None = None,
    canary_percent: int | None = None,
) -> ModelDeploymentStatus:
    prev = md.get("status") or {}
    gen = md["metadata"].get("generation", 1)
    found: dict[str, Any] = {"url": url, "model_digest": prev.get("modelDigest")}

    def done(phase: Phase, conds: list[c.Cond]) -> ModelDeploymentStatus:
        return ModelDeploymentStatus(
            observed_generation=gen,
            phase=phase,
            **found,
            conditions=c.merge(prev.get("conditions"), conds, gen, now),
        )

    def blocked(phase: Phase, reason: str, message: str, stalled: bool) -> ModelDeploymentStatus:
        """Not serving, and why: stalled for good, or still reconciling."""
        conds = c.standard(
            ready=False, reason=reason, message=message, stalled=stalled, reconciling=not stalled
        )
        return done(phase, conds)

    if problem is not None:
        reason, message, stalled = problem
        return blocked(Phase.FAILED if stalled else Phase.PENDING, reason, message, stalled)
    complete, ready, updated = _rolled_out(stable, want[0], digest or "")
    if canary_digest:
        c_complete, c_ready, _ = _rolled_out(canary, want[1], canary_digest)
        complete = complete and c_complete
        percent = canary_percent
        if percent is None:
            percent = (md["spec"].get("canary") or {}).get("trafficPercent")
        found["canary"] = CanaryStatus(
            model_digest=canary_digest, ready_replicas=c_ready, traffic_percent=percent
        )
        ready += c_ready
    found["replicas"] = ReplicaCounts(desired=want[0] + want[1], ready=ready, updated=updated)
    if refused := refused_model(pods or []):
        return done(
            Phase.FAILED,
            c.standard(ready=False, reason="ModelRefused", message=refused, stalled=True),
        )
    if found_problem := pod_problem(pods or []):
        return blocked(*found_problem)
    for dep in (stable, canary):
        for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return done(
                    Phase.DEGRADED,
                    c.standard(
                        ready=False,
                        reason="ProgressDeadlineExceeded",
                        message=cond.get("message", ""),
                        stalled=True,
                    ),
                )
            if cond["type"] == "ReplicaFailure" and cond.get("status") == "True":
                return done(
                    Phase.DEGRADED,
                    c.standard(
                        ready=False,
                        reason="ReplicaFailure",
                        message=cond.get("message", ""),
                        reconciling=True,
                    ),
                )
    if complete and digest:
        found["model_digest"] = digest  # only now is every replica serving it
        return done(
            Phase.READY,
            c.standard(
                ready=True,
                reason="Serving",
                message=f"{ready} replica(s) serving model {digest[:12]}",
            ),
        )
    return done(
        Phase.PROGRESSING,
        c.standard(
            ready=False,
            reason="RollingOut",
            reconciling=True,
            message=f"{ready}/{want[0] + want[1]} replicas ready with model {(digest or '')[:12]}",
        ),
    )
