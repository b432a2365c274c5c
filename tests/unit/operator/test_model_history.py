"""status.models, the ModelDeployment's model-version history, as a table of transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tauon_operator.status.model_history import KEEP_RETIRED, Lineage, lineage_of, model_history

A, B, C = "a" * 64, "b" * 64, "c" * 64
T0 = datetime(2026, 12, 7, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def states(history) -> list[tuple[str, str]]:
    return [(v.digest[0], v.state.value) for v in history]


def dump(history) -> list[dict]:
    return [v.model_dump(by_alias=True, mode="json", exclude_none=True) for v in history]


@pytest.mark.parametrize("before, champion, canary, after, reason_of_first", [
    ([], A, None, [("a", "Champion")], "every stable replica serves it"),
    ([("a", "Champion")], A, B, [("a", "Champion"), ("b", "Canary")], "every stable replica serves it"),
    # promoted: the canary's version now serves every stable replica
    ([("a", "Champion"), ("b", "Canary")], B, None, [("a", "Retired"), ("b", "Champion")],
     "replaced by " + "b" * 12),
    # rolled back: the canary is removed, the champion stays
    ([("a", "Champion"), ("b", "Canary")], A, None, [("a", "Champion"), ("b", "Retired")],
     "every stable replica serves it"),
    # a rollout not finished yet (no champion known): nothing changes state
    ([("a", "Champion")], None, None, [("a", "Champion")], None),
    # a retired version served again is champion again
    ([("a", "Retired"), ("b", "Champion")], A, None, [("a", "Champion"), ("b", "Retired")],
     "every stable replica serves it"),
])
def test_transitions(before, champion, canary, after, reason_of_first):
    prev = [{"digest": d * 64, "state": s, "since": T0.isoformat()} for d, s in before]
    history = model_history(prev, champion and Lineage(champion), canary and Lineage(canary), {}, T1)
    assert states(history) == after
    assert history[0].reason == reason_of_first
    for v, (_, old) in zip(history, before, strict=False):  # since moves only with the state
        assert v.since == (T0 if v.state.value == old else T1)


def test_lineage_and_live_accuracy_are_kept():
    tj = {"metadata": {"name": "digits-cnn"},
          "status": {"model": {"sha256": A, "datasetDigest": "sha256:" + "d" * 64,
                               "metrics": {"accuracy": 0.97}}}}
    live = {A[:12]: {"correct": 9, "incorrect": 1, "accuracy": 0.9}}
    [v] = model_history([], lineage_of(tj, A), None, live, T0)
    assert (v.training_job, v.dataset_digest, v.test_accuracy) == ("digits-cnn", "sha256:" + "d" * 64, 0.97)
    assert (v.live_accuracy, v.live_feedback) == (0.9, 10)
    # the TrainingJob moved on to another model: what was learnt of A stays
    moved = {"metadata": {"name": "digits-cnn"}, "status": {"model": {"sha256": B}}}
    [v2] = model_history(dump([v]), lineage_of(moved, A), None, {}, T1)
    assert (v2.training_job, v2.test_accuracy, v2.live_accuracy) == ("digits-cnn", 0.97, 0.9)


def test_only_the_last_retired_versions_are_kept():
    prev = [{"digest": f"{i:064x}", "state": "Retired", "since": T0.isoformat()} for i in range(15)]
    history = model_history(prev, Lineage(A), Lineage(B), {}, T1)
    assert len(history) == KEEP_RETIRED + 2
    assert [v.digest for v in history][:KEEP_RETIRED] == [f"{i:064x}" for i in range(5, 15)]
