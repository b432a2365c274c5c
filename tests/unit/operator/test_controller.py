"""The cache and the work queue: the machinery every reconcile stands on."""

from __future__ import annotations

import asyncio
import time

from tauon_operator.controller import Controller
from tauon_operator.settings import Settings
from tauon_operator.store import Store


def obj(name: str, version: str, ns: str = "ml", **labels) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": version,
                         "labels": labels, "managedFields": [{"manager": "x"}]}}


def test_store_selects_children_by_parent_label_and_namespace():
    s = Store()
    s.observe("Pod", "ADDED", obj("a-0", "1", **{"tauon.dev/trainingjob": "a", "tauon.dev/attempt": "0"}))
    s.observe("Pod", "ADDED", obj("a-1", "2", **{"tauon.dev/trainingjob": "a", "tauon.dev/attempt": "1"}))
    s.observe("Pod", "ADDED", obj("b-0", "3", **{"tauon.dev/trainingjob": "b"}))
    s.observe("Pod", "ADDED", obj("a-0", "4", ns="other", **{"tauon.dev/trainingjob": "a"}))
    names = lambda objs: [o["metadata"]["name"] for o in objs]  # noqa: E731
    assert names(s.select("Pod", "ml", {"tauon.dev/trainingjob": "a"})) == ["a-0", "a-1"]
    assert names(s.select("Pod", "ml", {"tauon.dev/trainingjob": "a", "tauon.dev/attempt": "1"})) == ["a-1"]
    s.observe("Pod", "DELETED", obj("a-0", "5", **{"tauon.dev/trainingjob": "a"}))
    assert names(s.select("Pod", "ml", {"tauon.dev/trainingjob": "a"})) == ["a-1"]
    # A relabelled object leaves its old index entry.
    s.observe("Pod", "MODIFIED", obj("a-1", "6", **{"tauon.dev/trainingjob": "b"}))
    assert names(s.select("Pod", "ml", {"tauon.dev/trainingjob": "b"})) == ["a-1", "b-0"]
    assert s.count("Pod") == 3


def test_store_keeps_the_newest_version_and_drops_managed_fields():
    s = Store()
    s.observe("TrainingJob", "MODIFIED", obj("t", "10"))  # our write's response
    s.observe("TrainingJob", "MODIFIED", {**obj("t", "9"), "status": {"phase": "old"}})  # a late event
    kept = s.get("TrainingJob", "ml", "t")
    assert kept["metadata"]["resourceVersion"] == "10" and "status" not in kept
    assert "managedFields" not in kept["metadata"]


def test_the_queue_folds_bursts_and_never_runs_one_key_twice_at_once():
    runs, active, overlap = [], set(), []

    async def reconcile(ctl, ns, name):
        if name in active:
            overlap.append(name)
        active.add(name)
        runs.append(name)
        await asyncio.sleep(0.05)
        active.discard(name)

    async def go():
        ctl = Controller(kube=None, settings=Settings(), workers=4)
        ctl.reconcilers["TrainingJob"] = reconcile
        for _ in range(20):  # a burst of events for one object
            ctl.enqueue("TrainingJob", "ml", "a")
        await asyncio.sleep(0.01)
        for _ in range(5):  # more while it runs: exactly one more run
            ctl.enqueue("TrainingJob", "ml", "a")
        for i in range(8):
            ctl.enqueue("TrainingJob", "ml", f"b{i}")
        await asyncio.sleep(0.01)
        await ctl.drain()

    asyncio.run(go())
    assert runs.count("a") == 2
    assert sorted(r for r in runs if r != "a") == [f"b{i}" for i in range(8)]
    assert not overlap


def test_a_poll_asked_for_by_every_run_stays_one_timer_per_key():
    runs: list[float] = []

    async def reconcile(ctl, ns, name):
        runs.append(time.monotonic())
        ctl.enqueue_after("ModelDeployment", ns, name, 0.1)  # every run asks for the next poll

    async def go() -> float:
        ctl = Controller(kube=None, settings=Settings(), workers=2)
        ctl.reconcilers["ModelDeployment"] = reconcile
        for _ in range(10):  # ten events, ten runs, each asking for a poll
            ctl.enqueue("ModelDeployment", "ml", "web")
            await asyncio.sleep(0.02)
        quiet = time.monotonic()
        await asyncio.sleep(0.45)
        return quiet

    quiet = asyncio.run(go())
    # One chain of polls (~4 in 0.45 s), not one chain per run that asked (~40).
    assert 3 <= sum(t > quiet for t in runs) <= 6, runs
