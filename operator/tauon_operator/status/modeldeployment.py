"""ModelDeployment status from the model it follows and its Deployments."""

from __future__ import annotations

from typing import Any

from tauon_runtime.contract.keys import MODEL_DIGEST_ANNOTATION as MODEL_DIGEST

from tauon_operator import conditions as c



def model_problem(ref: str, tj: dict[str, Any] | None) -> tuple[str, str, bool] | None:
    """(reason, message, stalled) while a TrainingJob cannot give a model; None when it can."""
    if tj is None:
        return "TrainingJobNotFound", f"TrainingJob {ref!r} does not exist in this namespace", True
    st = tj.get("status") or {}
    if (st.get("model") or {}).get("sha256"):
        return None
    if st.get("phase") == "Failed":
        reason = next((x.get("reason") for x in st.get("conditions") or [] if x["type"] == "Failed"), "")
        return "TrainingJobFailed", f"TrainingJob {ref!r} failed ({reason}) and has no model", True
    if st.get("phase") == "Succeeded":
        return "NoModel", f"TrainingJob {ref!r} succeeded without exporting a model", True
    return "WaitingForModel", f"waiting for TrainingJob {ref!r} to export a model", False


def _rolled_out(dep: dict[str, Any] | None, want: int, digest: str) -> tuple[bool, int, int]:
    """(complete, ready, updated) of one Deployment against the digest it should serve."""
    if dep is None:
        return want == 0, 0, 0
    st = dep.get("status") or {}
    template_digest = dep["spec"]["template"]["metadata"].get("annotations", {}).get(MODEL_DIGEST)
    ready, updated = st.get("readyReplicas", 0), st.get("updatedReplicas", 0)
    complete = (
        template_digest == digest
        and st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
        and updated >= want and st.get("availableReplicas", 0) >= want
        and st.get("replicas", 0) == updated  # no pod of the old model left
    )
    return complete, ready, updated


def modeldeployment_status(md: dict[str, Any], url: str, want: tuple[int, int],
                           digest: str | None, canary_digest: str | None,
                           stable: dict[str, Any] | None, canary: dict[str, Any] | None,
                           problem: tuple[str, str, bool] | None, now: str) -> dict[str, Any]:
    prev = md.get("status") or {}
    gen = md["metadata"].get("generation", 1)
    out: dict[str, Any] = {"observedGeneration": gen, "url": url}
    if "modelDigest" in prev:
        out["modelDigest"] = prev["modelDigest"]

    def done(phase: str, conds: list[c.Cond]) -> dict[str, Any]:
        out["phase"] = phase
        out["conditions"] = c.merge(prev.get("conditions"), conds, gen, now)
        return out

    if problem is not None:
        reason, message, stalled = problem
        return done("Failed" if stalled else "Pending",
                    c.standard(ready=False, reason=reason, message=message,
                               stalled=stalled, reconciling=not stalled))
    complete, ready, updated = _rolled_out(stable, want[0], digest or "")
    out["replicas"] = {"desired": want[0] + want[1], "ready": ready, "updated": updated}
    if canary_digest:
        c_complete, c_ready, _ = _rolled_out(canary, want[1], canary_digest)
        complete = complete and c_complete
        out["replicas"]["ready"] += c_ready
        percent = (md["spec"].get("canary") or {}).get("trafficPercent")
        out["canary"] = {"modelDigest": canary_digest, "readyReplicas": c_ready,
                         "trafficPercent": percent}
    for dep in (stable, canary):
        for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return done("Degraded", c.standard(ready=False, reason="ProgressDeadlineExceeded",
                                                   message=cond.get("message", ""), stalled=True))
            if cond["type"] == "ReplicaFailure" and cond.get("status") == "True":
                return done("Degraded", c.standard(ready=False, reason="ReplicaFailure",
                                                   message=cond.get("message", ""), reconciling=True))
    if complete:
        out["modelDigest"] = digest  # only now is every replica serving it
        return done("Ready", c.standard(ready=True, reason="Serving",
                                        message=f"{ready} replica(s) serving model {digest[:12]}"))
    return done("Progressing", c.standard(
        ready=False, reason="RollingOut", reconciling=True,
        message=f"{ready}/{want[0] + want[1]} replicas ready with model {(digest or '')[:12]}"))
