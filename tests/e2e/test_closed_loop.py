"""examples/closed-loop end to end: users' feedback starts a retraining round, the challenger
passes the gate, serves exactly 20 % as a canary and is promoted, and the held-out accuracy
rises; then lying users' feedback makes a worse challenger, rejected at the gate, and the
champion keeps serving. No request fails, and nobody edits the manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

import closed_loop
from kubetest import get_json, new_namespace, wait_phase
from localplatform import grant_store

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NAME = "digits-loop"


@pytest.fixture(scope="module")
def story(platform):
    ns = new_namespace(platform, "closed-loop")
    grant_store(platform, ns)
    platform.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "closed-loop"))
    wait_phase(platform, "tj", NAME, ns, "Succeeded", timeout=600)
    wait_phase(platform, "mdep", NAME, ns, "Ready", timeout=300)
    lines: list[str] = []
    out = closed_loop.walk(platform, ns, NAME, say=lines.append)
    print("\n".join(lines))
    yield platform, ns, out
    platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)  # its servers too


def test_feedback_retrains_a_challenger_that_is_promoted_after_an_exact_canary(story):
    cluster, ns, out = story
    d1 = out["round1"]
    assert d1["decision"] == "Promoted", d1
    m = d1["measurement"]
    assert m["requests"] >= 500 and m["seconds"] >= 20, m
    assert 15 <= m["canaryPercent"] <= 25, m  # 20 % asked, of what both tracks answered
    canary = d1["measuredCanary"]  # as the stable servers counted it, while it served
    assert 15 <= canary["measuredPercent"] <= 25 and canary["trafficPercent"] == 20, canary
    assert canary["replicas"]["desired"] == 2  # one stable and one canary replica
    assert out["champion"] == d1["digest"] != out["first"]
    # the champion learnt from the users' labels: better on digits neither model ever saw
    assert out["after"] >= out["before"] + 0.03, (out["before"], out["after"])
    assert not out["traffic1"].failed, out["traffic1"].failed[:5]
    assert out["traffic1"].by_digest.get(out["champion"][:12], 0) > 0


def test_a_challenger_made_worse_on_purpose_is_rejected_and_the_champion_keeps_serving(story):
    cluster, ns, out = story
    d2 = out["round2"]
    assert d2["decision"] == "Rejected", d2
    assert d2["reason"] in ("GateFailed", "TrainingFailed"), d2
    assert out["champion_after_poison"] == out["champion"]
    assert out["after_poison"] == pytest.approx(out["after"], abs=0.005)
    assert not out["traffic2"].failed, out["traffic2"].failed[:5]


def test_the_status_tells_the_loop_and_the_spec_is_never_edited(story):
    cluster, ns, out = story
    md = get_json(cluster, "mdep", NAME, "-n", ns)
    assert md["metadata"]["generation"] == 1  # GitOps: what the user applied, untouched
    assert md["spec"]["model"] == {"trainingJobRef": {"name": NAME}, "format": "safetensors"}
    st = md["status"]
    loop = st["retraining"]
    assert loop["phase"] == "Idle" and loop["round"] == 2
    assert loop["champion"]["trainingJob"] == f"{NAME}-retrain-1"
    assert [d["decision"] for d in loop["decisions"]] == ["Promoted", "Rejected"]
    models = {v["digest"]: v for v in st["models"]}
    assert models[out["first"]]["state"] == "Retired"
    champion = models[out["champion"]]
    assert champion["state"] == "Champion" and champion["trainingJob"] == f"{NAME}-retrain-1"
    assert champion["datasetDigest"] and champion["testAccuracy"] >= models[out["first"]]["testAccuracy"]
    rejected = [v for v in st["models"] if v["state"] == "Rejected"]
    assert len(rejected) == 1 and rejected[0]["digest"] == out["round2"]["digest"]
    # each round's Dataset and TrainingJob belong to the ModelDeployment (deleted with it)
    for kind in ("tds", "tj"):
        for n in (1, 2):
            obj = get_json(cluster, kind, f"{NAME}-retrain-{n}", "-n", ns)
            [owner] = obj["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelDeployment", NAME, True)
    base = get_json(cluster, "tds", f"{NAME}-retrain-1", "-n", ns)
    assert base["spec"]["source"]["feedback"]["baseDatasetRef"] == {"name": "digits-small"}
    # the base's test split, carried over: champion and challenger judged on the same digits
    assert base["status"]["counts"]["test"] == get_json(cluster, "tds", "digits-small", "-n", ns)["status"]["counts"]["test"]
    events = get_json(cluster, "events", "-n", ns, "--field-selector",
                      f"involvedObject.kind=ModelDeployment,involvedObject.name={NAME}")["items"]
    reasons = {e["reason"] for e in events}
    assert {"RetrainingStarted", "CanaryStarted", "Promoted", "RetrainingRejected"} <= reasons, reasons
    row = cluster.kubectl("get", "mdep", NAME, "-n", ns, "--no-headers").stdout.split()
    assert out["champion"][:12] in " ".join(row) or out["champion"] in " ".join(row), row
