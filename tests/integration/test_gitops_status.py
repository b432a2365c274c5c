"""GitOps tools wait for the truth: a freshly applied object, before the operator has said
anything, is InProgress to kstatus (what `flux ... --wait` and kpt compute) and Progressing to
the Argo CD health check; once status reports Ready for the current generation it is Current and
Healthy; a spec change makes it InProgress again until the operator catches up.

The API server alone decides what a fresh object looks like: it is created with a server-side
dry run, which no operator (one may run on this shared cluster for other tests) ever sees, so
this proves the CRD (its status default), not the operator's habits; the later states are that
object as the operator and a spec change would leave it.
"""

from __future__ import annotations

import copy
import json

import pytest

import gitops

pytestmark = pytest.mark.cluster

STAMP = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def kstatus():
    return gitops.kstatus()


@pytest.fixture(scope="module")
def argocd():
    return gitops.argocd_health()


def conditions(generation: int, **true: bool) -> list[dict]:
    names = ["Ready", "Reconciling", "Stalled", *(k for k in true if k not in ("Ready",))]
    return [{"type": t, "status": "True" if true.get(t) else "False", "reason": "Because",
             "message": "", "lastTransitionTime": STAMP, "observedGeneration": generation}
            for t in dict.fromkeys(names)]


# kind -> (the minimal example, the status the operator writes once done, a spec change)
KINDS = {
    "Dataset": ("dataset-minimal", {"phase": "Ready"}, {"preprocessing": {"normalize": False}}),
    "TrainingJob": ("trainingjob-minimal", {"phase": "Succeeded", "succeeded": 1},
                    {"suspend": True}),
    "ModelDeployment": ("modeldeployment-minimal", {"phase": "Ready"}, {"replicas": 2}),
}


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_objects_wait_for_the_operator_then_read_ready(cluster, crds, namespace, kstatus,
                                                              argocd, kind):
    example, done, change = KINDS[kind]
    plural = kind.lower()
    text = (gitops.REPO / "examples" / f"{example}.yaml").read_text()
    fresh = json.loads(cluster.kubectl("create", "--dry-run=server", "-o", "json", "-n", namespace,
                                       "-f", "-", input=text).stdout)
    assert fresh["metadata"]["generation"] == 1
    assert fresh["status"] == {"observedGeneration": 0}, "the API server fills the CRD's default"
    assert kstatus(fresh)["status"] == "InProgress", kstatus(fresh)
    assert argocd(fresh)["status"] == "Progressing"
    # The default is what holds it back: without status, kstatus calls the object Current.
    bare = {k: v for k, v in fresh.items() if k != "status"}
    assert kstatus(bare)["status"] == "Current"

    job_like = {"Succeeded": True} if kind == "TrainingJob" else {}
    status = {"observedGeneration": 1, **done,
              "conditions": conditions(1, Ready=True, **job_like)}
    ready = {**fresh, "status": status}
    assert kstatus(ready)["status"] == "Current", kstatus(ready)
    assert argocd(ready)["status"] == "Healthy", argocd(ready)

    # A spec change: the API server bumps the generation; status still speaks of the last one.
    changed = copy.deepcopy(ready)
    changed["spec"].update(change)
    changed["metadata"]["generation"] = 2
    assert kstatus(changed)["status"] == "InProgress", kstatus(changed)
    assert argocd(changed)["status"] == "Progressing"
