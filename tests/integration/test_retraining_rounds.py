"""The retraining policy on the real control plane: what the API server refuses at apply, what
the operator says about a schedule it cannot read, and that old rounds' objects are pruned past
historyLimit (with exactly the chart's RBAC). The loop itself, with serving pods that answer,
is tests/e2e/test_closed_loop.py."""

from __future__ import annotations

import json

import pytest

from kubetest import (apply_objects, condition, finish_pods, get_json, succeed_with_model,
                      wait_for, wait_phase)
from tauon_operator import retraining


GROUP = "tauon.dev/v1alpha1"
POLICY = {"trigger": {"minFeedback": 100}}


def objects(spec: dict) -> list[dict]:
    return [
        {"apiVersion": GROUP, "kind": "Dataset", "metadata": {"name": "digits"},
         "spec": {"source": {"builtin": {"name": "digits"}}}},
        {"apiVersion": GROUP, "kind": "TrainingJob", "metadata": {"name": "recipe"},
         "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"},
                  "hyperparameters": {"epochs": 2, "batchSize": 32}}},
        {"apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": "web"},
         "spec": {"model": {"trainingJobRef": {"name": "recipe"}}, "feedback": {"enabled": True},
                  "retraining": POLICY} | spec},
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": {"uri": "s3://tauon/m/", "sha256": "a" * 64}}, "retraining trains from the recipe"),
        ({"canary": {"model": {"trainingJobRef": {"name": "other"}}}}, "retraining runs its own canaries"),
        ({"feedback": {"enabled": False}}, "retraining learns from feedback"),
        ({"retraining": {"trigger": {}}}, "set at least one of minFeedback, schedule or liveAccuracyBelow"),
        ({"retraining": {"trigger": {"schedule": "every day"}}}, "spec.retraining.trigger.schedule"),
        ({"retraining": {"trigger": {"minFeedback": 10}, "analysis": {"trafficPercent": 100}}},
         "spec.retraining.analysis.trafficPercent"),
    ],
)
def test_the_api_server_refuses_a_policy_that_cannot_run(cluster, crds, namespace, spec, message):
    md = objects(spec)[2]
    res = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(md), check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_a_schedule_out_of_range_is_a_condition_naming_the_field(cluster, namespace, tauon_operator):
    md = objects({"retraining": {"trigger": {"schedule": "0 25 * * *"}}})[2]
    apply_objects(cluster, namespace, md)
    st = wait_phase(cluster, "mdep", "web", namespace, "Failed")
    ready = condition(st, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "retraining.trigger.schedule" in ready["message"] and "hour: '25' is outside 0-23" in ready["message"]


def test_rounds_past_the_history_limit_are_pruned(cluster, namespace, tauon_operator):
    ds, recipe, md = objects({"retraining": POLICY | {"historyLimit": 2}})
    apply_objects(cluster, namespace, ds)
    finish_pods(cluster, namespace, "tauon.dev/dataset=digits")
    wait_phase(cluster, "tds", "digits", namespace, "Ready")
    apply_objects(cluster, namespace, recipe)
    succeed_with_model(cluster, namespace, "recipe", "a" * 64)
    apply_objects(cluster, namespace, md)
    wait_for(lambda: (get_json(cluster, "mdep", "web", "-n", namespace).get("status") or {})
             .get("retraining", {}).get("phase") == "Idle", what="the loop idle")
    live = get_json(cluster, "mdep", "web", "-n", namespace)
    # Five rounds' objects, as the operator made them (owned, labelled), suspended so nothing runs.
    for n in range(1, 6):
        ds_n, tj_n = retraining.round_children(live, recipe, n)
        tj_n["spec"]["suspend"] = True
        apply_objects(cluster, namespace, ds_n, tj_n)
    names = {f"web-retrain-{n}" for n in range(1, 6)}
    assert names <= {t["metadata"]["name"] for t in get_json(cluster, "tj", "-n", namespace)["items"]}
    # The loop at round 5: rounds 1-3 are past historyLimit 2.
    cluster.kubectl("patch", "mdep", "web", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"retraining": {"phase": "Idle", "round": 5}}}))
    kept = {"web-retrain-4", "web-retrain-5"}
    for kind in ("tj", "tds"):
        wait_for(lambda kind=kind: {o["metadata"]["name"] for o in get_json(cluster, kind, "-n", namespace)["items"]
                                    if o["metadata"]["name"].startswith("web-retrain-")
                                    and not o["metadata"].get("deletionTimestamp")} == kept,
                 timeout=60, what=f"the {kind} of rounds 1-3 pruned")
    # the objects the user applied are never pruned
    assert {"recipe"} <= {t["metadata"]["name"] for t in get_json(cluster, "tj", "-n", namespace)["items"]}
    assert get_json(cluster, "mdep", "web", "-n", namespace)["metadata"]["generation"] == 1

