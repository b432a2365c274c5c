"""Argo CD's view of our resources: the Lua health check (charts/tauon/health/tauon.lua), run by
a real Lua interpreter (lupa) over status samples of the three kinds, the way the operator
writes them (operator/tauon_operator/status/*)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import gitops

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = gitops.ARGOCD_SCRIPT


def conds(ready=False, reconciling=False, stalled=False, succeeded=None, failed=None,
          reason="Because", message="") -> list[dict]:
    """The condition set conditions.standard() writes."""
    out = [("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled)]
    if succeeded is not None:
        out.append(("Succeeded", succeeded))
    if failed is not None:
        out.append(("Failed", failed))
    return [{"type": t, "status": "True" if s else "False", "reason": reason if s or t == "Ready" else "Idle",
             "message": message if s or t == "Ready" else "", "observedGeneration": 1,
             "lastTransitionTime": "2026-01-01T00:00:00Z"} for t, s in out]


def obj(kind: str, status: dict | None, generation: int = 1) -> dict:
    o = {"apiVersion": "tauon.dev/v1alpha1", "kind": kind,
         "metadata": {"name": "x", "namespace": "ns", "generation": generation},
         "spec": {}}
    if status is not None:
        o["status"] = status
    return o


def st(phase: str, conditions: list[dict], generation: int = 1) -> dict:
    return {"observedGeneration": generation, "phase": phase, "conditions": conditions}


JOBLIKE = {"succeeded": False, "failed": False}
SAMPLES = [
    # kind, status, generation, expected health, a word the message must contain
    ("Dataset", None, 1, "Progressing", "operator"),
    # What the API server fills in before the operator writes status (the CRD's default).
    ("Dataset", {"observedGeneration": 0}, 1, "Progressing", "generation 1"),
    ("TrainingJob", {"observedGeneration": 0}, 1, "Progressing", "generation 1"),
    ("ModelDeployment", {"observedGeneration": 0}, 1, "Progressing", "generation 1"),
    ("Dataset", st("Pending", conds(reconciling=True, reason="Creating", message="creating")), 1,
     "Progressing", "creating"),
    ("Dataset", st("Preparing", conds(reconciling=True, reason="Preparing", message="preparing 40%")), 1,
     "Progressing", "preparing"),
    ("Dataset", st("Ready", conds(ready=True, reason="Prepared", message="1797 samples, 10 classes")), 1,
     "Healthy", "1797"),
    ("Dataset", st("Failed", conds(stalled=True, reason="ChecksumMismatch", message="sha256 differs")), 1,
     "Degraded", "sha256"),
    ("Dataset", st("Ready", conds(ready=True, message="old")), 2, "Progressing", "generation 2"),
    ("TrainingJob", st("Pending", conds(reconciling=True, reason="WaitingForDataset",
                                        message="waiting for Dataset", **JOBLIKE)), 1, "Progressing", "waiting"),
    ("TrainingJob", st("Pending", conds(stalled=True, reason="DatasetNotFound",
                                        message="Dataset 'd' does not exist", **JOBLIKE)), 1, "Degraded", "exist"),
    ("TrainingJob", st("Running", conds(reconciling=True, reason="Training",
                                        message="2 worker(s) training, 40%", **JOBLIKE)), 1, "Progressing", "40%"),
    ("TrainingJob", st("Restarting", conds(reconciling=True, reason="WorkerFailed",
                                           message="restarting the group", **JOBLIKE)), 1, "Progressing", "restart"),
    ("TrainingJob", st("Suspended", conds(reason="Suspended", message="suspended: workers stopped",
                                          **JOBLIKE)), 1, "Suspended", "suspended"),
    ("TrainingJob", st("Succeeded", conds(ready=True, succeeded=True, failed=False, reason="Succeeded",
                                          message="training finished, test accuracy 0.9800")), 1,
     "Healthy", "0.98"),
    ("TrainingJob", st("Failed", conds(stalled=True, succeeded=False, failed=True,
                                       reason="BackoffLimitExceeded", message="failed after 2 restart(s)")), 1,
     "Degraded", "restart"),
    ("TrainingJob", st("Failed", conds(stalled=True, succeeded=False, failed=True,
                                       reason="BelowEvaluationGate", message="")), 1,
     "Degraded", "BelowEvaluationGate"),
    ("ModelDeployment", st("Pending", conds(reconciling=True, reason="ModelNotReady",
                                            message="TrainingJob 't' has no model yet")), 1,
     "Progressing", "no model"),
    ("ModelDeployment", st("Progressing", conds(reconciling=True, reason="RollingOut",
                                                message="1/2 replicas ready")), 1, "Progressing", "1/2"),
    ("ModelDeployment", st("Ready", conds(ready=True, reason="Serving",
                                          message="2 replica(s) serving model abc")), 1, "Healthy", "serving"),
    ("ModelDeployment", st("Degraded", conds(reconciling=True, reason="ReplicaFailure",
                                             message="quota exceeded")), 1, "Degraded", "quota"),
    ("ModelDeployment", st("Degraded", conds(stalled=True, reason="ProgressDeadlineExceeded",
                                             message="progress deadline")), 1, "Degraded", "deadline"),
    ("ModelDeployment", st("Failed", conds(stalled=True, reason="UnsupportedModelURI",
                                           message="s3:// is not supported")), 1, "Degraded", "s3"),
    ("ModelDeployment", {"observedGeneration": 3}, 3, "Progressing", ""),
]


@pytest.fixture(scope="module")
def health():
    return gitops.argocd_health()


@pytest.mark.parametrize("kind, status, generation, expected, word", SAMPLES,
                         ids=[f"{s[0]}-{(s[1] or {}).get('phase', 'none')}-{i}" for i, s in enumerate(SAMPLES)])
def test_health_maps_conditions(health, kind, status, generation, expected, word):
    result = health(obj(kind, status, generation))
    assert result["status"] == expected
    assert word in result["message"]
    assert isinstance(result["message"], str)


def test_health_statuses_are_argo_cds():
    statuses = {s[3] for s in SAMPLES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_examples_of_argocd_configuration_embed_the_script():
    """docs/argocd/argocd-cm.yaml must carry the script as it is, for each of the three kinds."""
    cm = yaml.safe_load((ROOT / "docs" / "argocd" / "argocd-cm.yaml").read_text())
    data = cm["data"]
    for kind in ("Dataset", "TrainingJob", "ModelDeployment"):
        assert data[f"resource.customizations.health.tauon.dev_{kind}"].strip() == SCRIPT.read_text().strip()
