"""The ModelDeployment's model-version history: which versions served, from what data, how they
did offline and live, and what each is now (status.models)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tauon_operator.api.modeldeployment import ModelVersion
from tauon_operator.api.modeldeployment import ModelVersionState as State

KEEP_RETIRED = 10


@dataclass(frozen=True)
class Lineage:
    """What is known of a version where it was resolved (a TrainingJob's status.model)."""

    digest: str
    training_job: str | None = None
    dataset_digest: str | None = None
    test_accuracy: float | None = None


def lineage_of(tj: dict[str, Any] | None, digest: str) -> Lineage:
    model = ((tj or {}).get("status") or {}).get("model") or {}
    if model.get("sha256") != digest:  # a pinned URI, or the TrainingJob has moved on
        return Lineage(digest)
    accuracy = (model.get("metrics") or {}).get("accuracy")
    return Lineage(
        digest,
        training_job=(tj or {})["metadata"]["name"],
        dataset_digest=model.get("datasetDigest"),
        test_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
    )


def model_history(
    prev: list[dict[str, Any]],
    champion: Lineage | None,
    canary: Lineage | None,
    live: dict[str, dict[str, Any]],
    now: datetime,
    rejected: tuple[Lineage, str] | None = None,
) -> tuple[ModelVersion, ...]:
    """The history after this reconcile. `champion`: the version every stable replica serves;
    `canary`: the canary track's; `live`: the feedback stats' byModelDigest (12-digit keys);
    `rejected`: a retraining challenger just turned down (at the gate or from its canary), and
    why."""
    versions = {v["digest"]: ModelVersion.model_validate(v) for v in prev if v.get("digest")}
    order = list(versions)
    if rejected is not None:
        turned_down, why = rejected
        if turned_down.digest not in versions:
            order.append(turned_down.digest)
        was = versions.get(turned_down.digest) or ModelVersion(
            digest=turned_down.digest, state=State.REJECTED, since=now
        )
        versions[turned_down.digest] = was.model_copy(
            update={
                "state": State.REJECTED,
                "since": now,
                "reason": why,
                "training_job": was.training_job or turned_down.training_job,
                "dataset_digest": was.dataset_digest or turned_down.dataset_digest,
                "test_accuracy": was.test_accuracy
                if was.test_accuracy is not None
                else turned_down.test_accuracy,
            }
        )
    for role, lineage in ((State.CHAMPION, champion), (State.CANARY, canary)):
        if lineage is None:
            continue
        known = versions.get(lineage.digest)
        if known is None:
            order.append(lineage.digest)
            known = ModelVersion(digest=lineage.digest, state=role, since=now)
        fill = {
            "training_job": known.training_job or lineage.training_job,
            "dataset_digest": known.dataset_digest or lineage.dataset_digest,
            "test_accuracy": known.test_accuracy
            if known.test_accuracy is not None
            else lineage.test_accuracy,
        }
        versions[lineage.digest] = known.model_copy(update=fill)
    live_ones = {champion.digest if champion else None, canary.digest if canary else None}
    for digest, v in list(versions.items()):
        reason: str | None
        if champion is not None and digest == champion.digest:
            state, reason = State.CHAMPION, "every stable replica serves it"
        elif canary is not None and digest == canary.digest:
            state, reason = State.CANARY, "the canary track serves it"
        elif v.state not in (State.RETIRED, State.REJECTED) and champion is not None:
            state = State.RETIRED
            reason = (
                f"replaced by {champion.digest[:12]}"
                if v.state == State.CHAMPION
                else ("the canary was removed")
            )
        else:
            state, reason = v.state, v.reason
        update: dict[str, Any] = {"state": state, "reason": reason}
        if state != v.state:
            update["since"] = now
        graded = live.get(digest[:12]) or {}
        if digest in live_ones and graded:
            n = int(graded.get("correct", 0)) + int(graded.get("incorrect", 0))
            update |= {"live_accuracy": graded.get("accuracy"), "live_feedback": n}
        versions[digest] = v.model_copy(update=update)
    retired = [d for d in order if versions[d].state in (State.RETIRED, State.REJECTED)]
    dropped = set(retired[: max(0, len(retired) - KEEP_RETIRED)])
    return tuple(versions[d] for d in order if d not in dropped)
