"""A ModelDeployment's retraining policy: when to train a challenger on the base data plus the
feedback, how to gate it against the champion, and how its canary is judged before it is
promoted or rolled back. What the operator decides is in `status.retraining` and in the objects
it owns (a Dataset and a TrainingJob per round); it never edits the spec."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from tauon_operator import cron

from .common import ApiModel, StatusModel, cel, rules

# Five fields of digits, `*`, `,`, `-` and `/`, or a macro: the operator reads the ranges.
CRON_PATTERN = r"^(@(hourly|daily|midnight|weekly|monthly|yearly|annually)|(\S+\s+){4}\S+)$"
TRIGGERS = ("minFeedback", "schedule", "liveAccuracyBelow")


class Trigger(ApiModel):
    """When a retraining round starts: whichever condition is met first (at least one)."""

    model_config = {
        "json_schema_extra": rules(
            cel(
                " || ".join(f"has(self.{t})" for t in TRIGGERS),
                "set at least one of minFeedback, schedule or liveAccuracyBelow",
            )
        )
    }

    min_feedback: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Start a round once this many labelled feedback records arrived since the "
        "last round ended (or since the deployment was created).",
    )
    schedule: str | None = Field(
        None,
        max_length=100,
        pattern=CRON_PATTERN,
        description="Start a round on this cron schedule, in UTC (`0 3 * * 0`: Sundays at "
        "03:00), when labelled feedback arrived since the last round.",
    )
    live_accuracy_below: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Start a round when the champion's accuracy on its labelled feedback falls "
        "below this, counted over at least liveAccuracySamples records since the last round.",
    )
    live_accuracy_samples: int = Field(
        50,
        ge=1,
        le=1_000_000,
        description="Labelled feedback records liveAccuracyBelow needs before it judges.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            cron.Schedule.parse(schedule)
        return schedule

    @model_validator(mode="after")
    def _one_trigger(self) -> Trigger:
        if self.min_feedback is None and self.schedule is None and self.live_accuracy_below is None:
            raise ValueError("set at least one of minFeedback, schedule or liveAccuracyBelow")
        return self


class Gate(ApiModel):
    """What a challenger must reach offline before it serves any traffic (beyond its own
    TrainingJob's evaluation.minimum)."""

    max_accuracy_drop: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Its test accuracy may be at most this far below the champion's. The test "
        "split is the base Dataset's, carried over unchanged, so both are judged on the same "
        "examples. 0: not worse than the champion.",
    )


class Analysis(ApiModel):
    """How the challenger's canary is judged against the stable track, from the serving pods'
    own /metrics and the feedback they received."""

    traffic_percent: int = Field(
        20, ge=1, le=99, description="Exact percent of prediction requests the canary answers."
    )
    min_requests: int = Field(
        500,
        ge=1,
        le=100_000_000,
        description="Prediction requests (both tracks together) before a decision.",
    )
    min_duration_seconds: int = Field(
        60, ge=0, le=7 * 86400, description="Seconds the canary serves before a decision."
    )
    max_error_rate_increase: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Percentage points the canary's failed share (5xx, or no answer to a "
        "forwarded request) may exceed the stable track's.",
    )
    max_latency_ratio: float = Field(
        2.0,
        ge=1,
        le=100,
        description="How many times the stable track's p99 request latency the canary's may be.",
    )
    max_accuracy_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="How far the canary's accuracy on its labelled feedback may be below the "
        "stable track's on feedback received during the canary; judged only with at least "
        "minFeedback records on each.",
    )
    min_feedback: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="Labelled feedback records each track needs for the accuracy comparison.",
    )


class Retraining(ApiModel):
    """Retrain from the served model's own recipe when the trigger fires: a new Dataset version
    (the recipe's Dataset plus this deployment's labelled feedback, test split unchanged), a
    challenger TrainingJob with the recipe's spec on it, the gate, a canary, then promotion or
    rollback. Needs spec.model.trainingJobRef (the recipe), feedback on, and the artifact
    store."""

    trigger: Trigger = Field(description="When a round starts.")
    gate: Gate = Field(default_factory=Gate, description="The offline comparison.")
    analysis: Analysis = Field(
        default_factory=Analysis, description="The canary and its live comparison."
    )
    history_limit: int = Field(
        3,
        ge=1,
        le=20,
        description="Rounds whose Dataset and TrainingJob are kept (the champion's always is).",
    )


# --- status --------------------------------------------------------------------------------------


class RetrainingPhase(StrEnum):
    IDLE = "Idle"  # waiting for the trigger
    TRAINING = "Training"  # the round's Dataset and TrainingJob run
    CANARY = "Canary"  # the challenger serves its share; analysis runs


class Decision(StrEnum):
    PROMOTED = "Promoted"
    REJECTED = "Rejected"  # at the gate: never served
    ROLLED_BACK = "RolledBack"  # from canary


class ChampionRef(StatusModel):
    """The model a promotion made the champion (served instead of spec.model while spec.model
    stays what it was when promoted)."""

    digest: str = Field(description="Its sha256.")
    location: str = Field(description="Where it is published (the artifact store).")
    training_job: str | None = Field(None, description="The TrainingJob that exported it.")
    dataset_digest: str | None = Field(None, description="The Dataset version it learnt from.")
    test_accuracy: float | None = Field(None, ge=0, le=1, description="Its test accuracy.")
    over: str = Field(description="Fingerprint of spec.model when it was promoted.")


class Challenger(StatusModel):
    """This round's candidate."""

    training_job: str = Field(description="Its TrainingJob (owned by this ModelDeployment).")
    dataset: str = Field(description="Its Dataset (base plus feedback, owned too).")
    digest: str | None = Field(None, description="Its sha256, once exported.")
    location: str | None = Field(None, description="Where it is published.")
    test_accuracy: float | None = Field(None, ge=0, le=1, description="Its test accuracy.")
    canary_since: datetime | None = Field(
        None,
        description="When both tracks had rolled out, the canary ready; the analysis counts "
        "from 10 s later (the canary's endpoint reaching every stable server).",
    )
    # Each track's counters and the stable's labelled feedback when the analysis started: what
    # came after is the comparison.
    baseline: dict[str, float] | None = Field(
        None, description="Counters when the analysis started (requests, errors, fallback …)."
    )


class Measurement(StatusModel):
    """The live comparison so far (or that the decision used)."""

    requests: int | None = Field(None, ge=0, description="Prediction requests, both tracks.")
    canary_percent: float | None = Field(
        None, ge=0, le=100, description="Percent of them the canary answered (or was sent)."
    )
    seconds: int | None = Field(None, ge=0, description="Seconds the analysis has run.")
    canary_error_percent: float | None = Field(
        None, ge=0, le=100, description="Percent of the canary's requests that failed."
    )
    stable_error_percent: float | None = Field(
        None, ge=0, le=100, description="Percent of the stable track's requests that failed."
    )
    canary_p99_seconds: float | None = Field(
        None, ge=0, description="The canary's p99 request latency."
    )
    stable_p99_seconds: float | None = Field(
        None, ge=0, description="The stable track's p99 request latency."
    )
    canary_accuracy: float | None = Field(
        None, ge=0, le=1, description="The canary's accuracy on its labelled feedback."
    )
    canary_feedback: int | None = Field(
        None, ge=0, description="Labelled feedback records on the canary's predictions."
    )
    stable_accuracy: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The stable track's accuracy on labelled feedback since the analysis began.",
    )
    stable_feedback: int | None = Field(
        None, ge=0, description="Labelled feedback records that accuracy counts."
    )


class RoundDecision(StatusModel):
    """What one round ended in, and the numbers it used."""

    round: int = Field(ge=1, description="The round.")
    decision: Decision = Field(description="Promoted, Rejected (at the gate) or RolledBack.")
    reason: str = Field(description="CamelCase cause (Promoted, GateFailed, TrainingFailed, …).")
    message: str = Field(description="The comparison, with its numbers.")
    time: datetime = Field(description="When it was decided.")
    digest: str | None = Field(None, description="The challenger's sha256, if it had one.")
    measurement: Measurement | None = Field(None, description="The live comparison it used.")


class RetrainingStatus(StatusModel):
    """Where the retraining loop stands."""

    phase: RetrainingPhase | None = Field(None, description="Idle, Training or Canary.")
    round: int = Field(0, ge=0, description="Rounds started so far.")
    round_started: datetime | None = Field(None, description="When the last round started.")
    labelled_at_round: int | None = Field(
        None,
        ge=0,
        description="Labelled feedback records counted when the last round started, or ended: "
        "the trigger counts what came after.",
    )
    trigger: str | None = Field(None, description="What started the last round.")
    champion: ChampionRef | None = Field(None, description="The promoted champion, if any.")
    challenger: Challenger | None = Field(None, description="This round's candidate.")
    analysis: Measurement | None = Field(None, description="The canary's comparison so far.")
    decisions: tuple[RoundDecision, ...] = Field(
        (), max_length=10, description="The last rounds' outcomes, oldest first."
    )
