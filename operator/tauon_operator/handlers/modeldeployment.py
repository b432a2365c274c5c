"""ModelDeployment: serves the model its TrainingJob exported (or a pinned URI) and rolls to a
new one when the job produces it; Ready only when every replica serves the right digest."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tauon_operator import serving
from tauon_operator.api import ModelDeployment, ModelDeploymentStatus
from tauon_operator.builders import modeldeployment as build
from tauon_operator.builders import pod
from tauon_operator.builders.modeldeployment import ResolvedModel
from tauon_operator.builders.trainingjob import MODEL_SUBDIR, output_claim_name
from tauon_operator.controller import Controller, Outcome, phase_events, utcnow
from tauon_operator.meta import PARENT_LABEL
from tauon_operator.settings import Settings
from tauon_operator.status.model_history import Lineage, lineage_of, model_history
from tauon_operator.status.modeldeployment import model_problem, modeldeployment_status
from tauon_runtime.contract.keys import TRACK_LABEL

KIND = "ModelDeployment"


def resolve(
    ctl: Controller, namespace: str, source: dict[str, Any]
) -> tuple[ResolvedModel | None, tuple[str, str, bool] | None]:
    """The model a spec.model (or canary.model) points at, or why there is none yet."""
    if ref := (source.get("trainingJobRef") or {}).get("name"):
        tj = ctl.store.get("TrainingJob", namespace, ref)
        problem = model_problem(ref, tj)
        if tj is None or problem is not None:
            return None, problem
        artifact = tj["status"]["model"]
        location = str(artifact.get("location") or "")
        if location.startswith(build.REMOTE_SCHEMES):  # published to the artifact store
            return ResolvedModel.from_uri(location, artifact["sha256"]), None
        return ResolvedModel(output_claim_name(tj), MODEL_SUBDIR, artifact["sha256"]), None
    try:
        return ResolvedModel.from_uri(source["uri"], source["sha256"]), None
    except ValueError as e:
        return None, ("UnsupportedModelURI", str(e), True)


def follows(md: dict[str, Any], trainingjob: str) -> bool:
    spec = md.get("spec") or {}
    refs = [(spec.get("model") or {}), ((spec.get("canary") or {}).get("model") or {})]
    return any((r.get("trainingJobRef") or {}).get("name") == trainingjob for r in refs)


def canary_children(md: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """What the canary track consists of, kept while its model cannot be resolved (a missing
    TrainingJob in the cache is no reason to drop serving capacity)."""
    name = build.deployment_name(md, canary=True)
    return frozenset(
        {
            ("Deployment", name),
            ("ConfigMap", build.config_map_name(md, canary=True)),
            ("Service", build.canary_service_name(md)),
        }
    )


def kept_feedback_claim(md: dict[str, Any], settings: Settings) -> frozenset[tuple[str, str]]:
    """Feedback that moved to the artifact store leaves the claim it was written to before (an
    upgrade): never pruned, so no record is lost; deleting the ModelDeployment removes it."""
    if build.feedback_in_store(md, settings):
        return frozenset({("PersistentVolumeClaim", build.feedback_claim_name(md))})
    return frozenset()


async def with_feedback_counts(
    ctl: Controller, md: dict[str, Any], status: ModelDeploymentStatus, pods: list[dict[str, Any]]
) -> tuple[ModelDeploymentStatus, dict[str, Any] | None]:
    """The servers' feedback counts in the status (the last known ones while no server
    answers), read again every feedback_poll_seconds; and the stats they came from."""
    m = md["metadata"]
    ctl.enqueue_after(KIND, m["namespace"], m["name"], ctl.settings.feedback_poll_seconds)
    prev = md.get("status") or {}
    stats = await serving.feedback_stats(pods, ctl.settings.serve_port)
    if stats is None:
        count, accuracy = prev.get("feedbackCount"), prev.get("feedbackAccuracy")
    else:
        count, accuracy = stats["total"], stats.get("accuracy")
    update = {"feedback_count": count, "feedback_accuracy": accuracy}
    return status.model_copy(update=update), stats


def with_history(
    ctl: Controller, md: dict[str, Any], status: ModelDeploymentStatus, stats: dict[str, Any] | None
) -> ModelDeploymentStatus:
    """status.models: the champion (once every stable replica serves it) and the canary, with
    their lineage from the TrainingJobs that exported them."""
    ns, spec = md["metadata"]["namespace"], md["spec"]

    def lineage(source: dict[str, Any], digest: str | None) -> Lineage | None:
        if not digest:
            return None
        ref = (source.get("trainingJobRef") or {}).get("name")
        return lineage_of(ctl.store.get("TrainingJob", ns, ref) if ref else None, digest)

    champion = lineage(spec["model"], status.model_digest)
    canary = lineage(
        (spec.get("canary") or {}).get("model") or {}, getattr(status.canary, "model_digest", None)
    )
    prev = (md.get("status") or {}).get("models") or []
    live = (stats or {}).get("byModelDigest") or {}
    return status.model_copy(
        update={"models": model_history(prev, champion, canary, live, utcnow())}
    )


async def with_measured_split(
    ctl: Controller, md: dict[str, Any], status: ModelDeploymentStatus, pods: list[dict[str, Any]]
) -> ModelDeploymentStatus:
    """The canary share the stable servers actually forwarded, read again every poll."""
    assert status.canary is not None
    m = md["metadata"]
    ctl.enqueue_after(KIND, m["namespace"], m["name"], ctl.settings.feedback_poll_seconds)
    stable = [p for p in pods if (p["metadata"].get("labels") or {}).get(TRACK_LABEL) == "stable"]
    measured = await serving.canary_share(stable, ctl.settings.serve_port)
    prev = ((md.get("status") or {}).get("canary")) or {}
    percent, requests = measured or (prev.get("measuredPercent"), prev.get("measuredRequests"))
    canary = status.canary.model_copy(
        update={"measured_percent": percent, "measured_requests": requests}
    )
    return status.model_copy(update={"canary": canary})


async def reconcile(ctl: Controller, namespace: str, name: str) -> None:
    md = ctl.store.get(KIND, namespace, name)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return
    # observe
    spec = md["spec"]
    model, problem = resolve(ctl, namespace, spec["model"])
    canary_model = None
    if spec.get("canary"):
        canary_model, _ = resolve(ctl, namespace, spec["canary"]["model"])
    stable_name, canary_name = build.deployment_name(md), build.deployment_name(md, canary=True)
    stable = ctl.store.get("Deployment", namespace, stable_name)
    canary = ctl.store.get("Deployment", namespace, canary_name) if canary_model else None
    pods = ctl.store.select("Pod", namespace, {PARENT_LABEL[KIND]: name})
    # plan status
    try:
        parsed = ModelDeployment.parse_spec(md)
    except ValidationError as e:
        await ctl.invalid_spec(md, str(e))
        return
    percent = parsed.canary.traffic_percent if parsed.canary and canary_model else None
    total = parsed.desired_replicas
    if parsed.autoscaling:  # the HPA owns the replica count
        total = ((stable or {}).get("spec") or {}).get(
            "replicas"
        ) or parsed.autoscaling.min_replicas
    want = build.split_replicas(total, percent)
    status = modeldeployment_status(
        md,
        build.url(md, ctl.settings),
        want,
        model.sha256 if model else None,
        canary_model.sha256 if canary_model else None,
        stable,
        canary,
        problem,
        utcnow(),
        pods,
    )
    stats = None
    if parsed.feedback.enabled:
        status, stats = await with_feedback_counts(ctl, md, status, pods)
    status = with_history(ctl, md, status, stats)
    if status.canary is not None:
        status = await with_measured_split(ctl, md, status, pods)
    # build
    children = None
    if model is not None:
        try:
            children = build.build(md, ctl.settings, model, canary_model)
        except (ValidationError, ValueError) as e:
            await ctl.invalid_spec(md, str(e))
            return
    events = phase_events(status, warn=("Failed", "Degraded"))
    await ctl.sync(
        md,
        Outcome(
            status=status,
            children=children,
            updates={"PersistentVolumeClaim": pod.update_claim},
            keep=(
                canary_children(md) if spec.get("canary") and canary_model is None else frozenset()
            )
            | kept_feedback_claim(md, ctl.settings),
            clear=("canary",),
            events=events,
        ),
    )
