"""ModelDeployment: serves the model its TrainingJob exported (or a pinned URI) and rolls to a
new one when the job produces it; Ready only when every replica serves the right digest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tauon_operator import retraining, serving
from tauon_operator.api import ModelDeployment, ModelDeploymentStatus
from tauon_operator.api.modeldeployment import ModelDeploymentSpec
from tauon_operator.api.retraining import RetrainingPhase, RetrainingStatus
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


async def fetch_feedback_stats(
    ctl: Controller, md: dict[str, Any], pods: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The servers' feedback stats, read again every feedback_poll_seconds (None while no
    server answers)."""
    m = md["metadata"]
    ctl.enqueue_after(KIND, m["namespace"], m["name"], ctl.settings.feedback_poll_seconds)
    return await serving.feedback_stats(pods, ctl.settings.serve_port)


def with_feedback_counts(
    md: dict[str, Any], status: ModelDeploymentStatus, stats: dict[str, Any] | None
) -> ModelDeploymentStatus:
    """The servers' feedback counts in the status (the last known ones while none answers)."""
    prev = md.get("status") or {}
    if stats is None:
        count, accuracy = prev.get("feedbackCount"), prev.get("feedbackAccuracy")
    else:
        count, accuracy = stats["total"], stats.get("accuracy")
    return status.model_copy(update={"feedback_count": count, "feedback_accuracy": accuracy})


def with_history(
    ctl: Controller,
    md: dict[str, Any],
    status: ModelDeploymentStatus,
    stats: dict[str, Any] | None,
    loop: Loop | None = None,
) -> ModelDeploymentStatus:
    """status.models: the champion (once every stable replica serves it) and the canary, with
    their lineage from the TrainingJobs that exported them (or the promotion that made it the
    champion), and the challengers retraining rejected."""
    ns, spec = md["metadata"]["namespace"], md["spec"]

    def tj_lineage(ref: str | None, digest: str | None) -> Lineage | None:
        if not digest:
            return None
        return lineage_of(ctl.store.get("TrainingJob", ns, ref) if ref else None, digest)

    def lineage(source: dict[str, Any], digest: str | None) -> Lineage | None:
        return tj_lineage((source.get("trainingJobRef") or {}).get("name"), digest)

    champion = lineage(spec["model"], status.model_digest)
    promoted = loop.status.champion if loop else None
    if promoted is not None and promoted.digest == status.model_digest:
        champion = Lineage(
            promoted.digest, promoted.training_job, promoted.dataset_digest, promoted.test_accuracy
        )
    canary_digest = getattr(status.canary, "model_digest", None)
    if loop and loop.status.challenger:
        canary = tj_lineage(loop.status.challenger.training_job, canary_digest)
    else:
        canary = lineage((spec.get("canary") or {}).get("model") or {}, canary_digest)
    rejected = None
    if loop and loop.step.rejected:
        digest, why = loop.step.rejected
        decided = loop.status.decisions[-1] if loop.status.decisions else None
        tj = retraining.round_name(md["metadata"]["name"], decided.round) if decided else None
        rejected = (tj_lineage(tj, digest) or Lineage(digest), why)
    prev = (md.get("status") or {}).get("models") or []
    live = (stats or {}).get("byModelDigest") or {}
    return status.model_copy(
        update={"models": model_history(prev, champion, canary, live, utcnow(), rejected)}
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


@dataclass(frozen=True)
class Loop:
    """This reconcile's step of the retraining loop, and what it serves."""

    step: retraining.Step
    champion: ResolvedModel | None  # a promoted model, served instead of spec.model
    canary: ResolvedModel | None  # the challenger under analysis
    children: list[dict[str, Any]]  # the round's Dataset and TrainingJob, until they exist
    keep: frozenset[tuple[str, str]]

    @property
    def status(self) -> RetrainingStatus:
        return self.step.status


async def retraining_step(
    ctl: Controller,
    md: dict[str, Any],
    parsed: ModelDeploymentSpec,
    stats: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    spec_model: ResolvedModel | None,
) -> Loop:
    """Observe what the loop needs, advance it one step (retraining.advance), and say what to
    serve and create."""
    assert parsed.retraining is not None
    policy, m = parsed.retraining, md["metadata"]
    ns, name = m["namespace"], m["name"]
    prev_status = md.get("status") or {}
    state = RetrainingStatus.model_validate(prev_status.get("retraining") or {})
    fingerprint = retraining.fingerprint(md["spec"]["model"])
    recipe_name = md["spec"]["model"]["trainingJobRef"]["name"]
    recipe = ctl.store.get("TrainingJob", ns, recipe_name)
    if recipe is not None and not recipe["spec"].get("datasetRef"):
        recipe = None  # own code with no Dataset has no feedback to be retrained on
    promoted = state.champion if state.champion and state.champion.over == fingerprint else None
    champion_digest = promoted.digest if promoted else (spec_model.sha256 if spec_model else None)
    if promoted:
        champion_accuracy = promoted.test_accuracy
    else:
        champion_accuracy = lineage_of(recipe, champion_digest or "").test_accuracy
    round_ = retraining.round_name(name, state.round) if state.round else None
    obs: dict[str, Any] = {}
    if state.phase == RetrainingPhase.TRAINING and round_:
        obs |= {
            "dataset": ctl.store.get("Dataset", ns, round_),
            "job": ctl.store.get("TrainingJob", ns, round_),
        }
    if state.phase == RetrainingPhase.CANARY and state.challenger:
        ctl.enqueue_after(KIND, ns, name, ctl.settings.feedback_poll_seconds)
        port = ctl.settings.serve_port
        by_track = {
            t: [p for p in pods if (p["metadata"].get("labels") or {}).get(TRACK_LABEL) == t]
            for t in ("stable", "canary")
        }
        canary_now = prev_status.get("canary") or {}
        obs |= {
            "job": ctl.store.get("TrainingJob", ns, state.challenger.training_job),
            "rolled_out": prev_status.get("phase") == "Ready"
            and canary_now.get("modelDigest") == state.challenger.digest
            and (canary_now.get("readyReplicas") or 0) > 0,
            "canary_metrics": await serving.track_metrics(by_track["canary"], port),
            "stable_metrics": await serving.track_metrics(by_track["stable"], port),
        }
    created = datetime.fromisoformat(m["creationTimestamp"].replace("Z", "+00:00"))
    observed = retraining.Observed(
        name=name,
        now=utcnow(),
        created=created,
        spec_model=fingerprint,
        champion_digest=champion_digest if recipe is not None else None,  # no recipe: no round
        champion_test_accuracy=champion_accuracy,
        stats=stats,
        **obs,
    )
    step = retraining.advance(policy, state, observed)
    state = step.status
    champion = (
        ResolvedModel.from_uri(state.champion.location, state.champion.digest)
        if state.champion
        else None
    )
    canary = None
    c = state.challenger
    if state.phase == RetrainingPhase.CANARY and c and c.location and c.digest:
        canary = ResolvedModel.from_uri(c.location, c.digest)
    children: list[dict[str, Any]] = []
    if state.phase == RetrainingPhase.TRAINING and recipe is not None:
        current = retraining.round_name(name, state.round)
        if not (
            ctl.store.get("Dataset", ns, current) and ctl.store.get("TrainingJob", ns, current)
        ):
            children = retraining.round_children(md, recipe, state.round)
    label = {PARENT_LABEL[KIND]: name}
    existing = {
        o["metadata"]["name"]
        for kind in ("Dataset", "TrainingJob")
        for o in ctl.store.select(kind, ns, label)
    }
    keep = retraining.kept_rounds(state, policy.history_limit, existing)
    return Loop(step, champion, canary, children, keep)


async def reconcile(ctl: Controller, namespace: str, name: str) -> None:
    md = ctl.store.get(KIND, namespace, name)
    if md is None or md["metadata"].get("deletionTimestamp"):
        return
    # observe
    spec = md["spec"]
    try:
        parsed = ModelDeployment.parse_spec(md)
    except ValidationError as e:
        await ctl.invalid_spec(md, str(e))
        return
    pods = ctl.store.select("Pod", namespace, {PARENT_LABEL[KIND]: name})
    stats = await fetch_feedback_stats(ctl, md, pods) if parsed.feedback.enabled else None
    model, problem = resolve(ctl, namespace, spec["model"])
    canary_model, percent = None, None
    if spec.get("canary"):
        canary_model, _ = resolve(ctl, namespace, spec["canary"]["model"])
        percent = parsed.canary.traffic_percent if parsed.canary and canary_model else None
    loop = None
    if parsed.retraining is not None:
        loop = await retraining_step(ctl, md, parsed, stats, pods, model)
        if loop.champion is not None:
            model, problem = loop.champion, None
        canary_model = loop.canary
        percent = parsed.retraining.analysis.traffic_percent if canary_model else None
    stable_name, canary_name = build.deployment_name(md), build.deployment_name(md, canary=True)
    stable = ctl.store.get("Deployment", namespace, stable_name)
    canary = ctl.store.get("Deployment", namespace, canary_name) if canary_model else None
    # plan status
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
        canary_percent=percent,
    )
    if parsed.feedback.enabled:
        status = with_feedback_counts(md, status, stats)
    status = with_history(ctl, md, status, stats, loop)
    if loop is not None:
        status = status.model_copy(update={"retraining": loop.status})
    if status.canary is not None:
        status = await with_measured_split(ctl, md, status, pods)
    # build
    children = None
    if model is not None:
        try:
            children = build.build(md, ctl.settings, model, canary_model, percent)
        except (ValidationError, ValueError) as e:
            await ctl.invalid_spec(md, str(e))
            return
    if loop is not None and loop.children and children is not None:
        children = [*children, *loop.children]
    keep = kept_feedback_claim(md, ctl.settings)
    if spec.get("canary") and canary_model is None:
        keep |= canary_children(md)
    if loop is not None:
        keep |= loop.keep
    events = phase_events(status, warn=("Failed", "Degraded"))
    if loop is not None:
        events += loop.step.events
    await ctl.sync(
        md,
        Outcome(
            status=status,
            children=children,
            updates={"PersistentVolumeClaim": pod.update_claim},
            keep=keep,
            clear=("canary",),
            events=events,
        ),
    )
