"""The name rules of each kind leave room for every child the operator builds from the name.

For each kind, the longest name its rule allows (and a dotted one where allowed) goes through
the real builders at the extremes the spec permits (the last restart, the last worker, a canary,
autoscaling, feedback): every child's name, every label value, every Service name and pod
hostname must then be valid, so nothing the API server accepts fails at build time for its name.
"""

from __future__ import annotations

import re

import pytest

from tauon_operator.api import Dataset, ModelDeployment, TrainingJob
from tauon_operator.api.trainingjob import MAX_BACKOFF_LIMIT, MAX_WORKERS
from tauon_operator.builders import dataset, modeldeployment, trainingjob
from tauon_operator.builders.modeldeployment import ResolvedModel
from tauon_operator.settings import Settings

S = Settings()
SHA = "a" * 64
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # pod hostnames
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Service names before Kubernetes 1.34
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def cr(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "ml", "uid": "u", "generation": 1},
            "spec": spec}


def longest(kind) -> str:
    return "a" + "b" * (kind.NAME.max_length - 1)


def check_children(children: list[dict]) -> None:
    for child in children:
        meta = child["metadata"]
        assert len(meta["name"]) <= 63 and DNS_SUBDOMAIN.match(meta["name"]), meta["name"]
        labels = dict(meta.get("labels", {}))
        template = child.get("spec", {}).get("template", {})
        labels.update(template.get("metadata", {}).get("labels", {}))
        for key, value in labels.items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (child["kind"], key, value)
        if child["kind"] == "Service":
            assert len(meta["name"]) <= 63 and DNS_1035.match(meta["name"]), meta["name"]


@pytest.mark.parametrize("name", [longest(Dataset), "digits.v2", "a.b.c"])
def test_dataset_names(name):
    Dataset.parse(cr("Dataset", name, {"source": {"builtin": {"name": "digits"}}}))
    ds = cr("Dataset", name, {"source": {"pvc": {"claimName": "raw", "path": "/x"}}})
    check_children(dataset.build(ds, S))


@pytest.mark.parametrize("name", [longest(TrainingJob), "a", "run-1"])
def test_trainingjob_names_fit_the_last_worker_of_the_last_attempt(name):
    spec = {"datasetRef": {"name": longest(Dataset)}, "model": {"architecture": "cnn"},
            "workers": MAX_WORKERS, "backoffLimit": MAX_BACKOFF_LIMIT,
            "hyperparameters": {"batchSize": MAX_WORKERS}}
    tj = cr("TrainingJob", name, spec)
    TrainingJob.parse(tj)
    children = trainingjob.build(tj, S, MAX_BACKOFF_LIMIT)
    check_children(children)
    (job,) = [c for c in children if c["kind"] == "Job"]
    (service,) = [c for c in children if c["kind"] == "Service"]
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    # The Job controller names worker i's host `<job>-<i>`, unshortened: a DNS label.
    hostname = f"{job['metadata']['name']}-{MAX_WORKERS - 1}"
    assert len(hostname) <= 63 and DNS_LABEL.match(hostname), hostname


@pytest.mark.parametrize("name", [longest(ModelDeployment), "m"])
def test_modeldeployment_names_fit_service_canary_autoscaler_and_feedback(name):
    spec = {"model": {"trainingJobRef": {"name": longest(TrainingJob)}},
            "autoscaling": {"maxReplicas": 4}, "feedback": {"enabled": True},
            "canary": {"model": {"uri": "pvc://models/v2", "sha256": SHA}, "trafficPercent": 20}}
    md = cr("ModelDeployment", name, spec)
    ModelDeployment.parse(md)
    model = ResolvedModel("models", "v1", SHA)
    children = modeldeployment.build(md, S, model, ResolvedModel("models", "v2", SHA))
    check_children(children)
    assert {c["kind"] for c in children} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                             "PersistentVolumeClaim", "ConfigMap"}


@pytest.mark.parametrize("kind, name, problem", [
    (Dataset, "d" * 64, "at most 63"),
    (TrainingJob, "t" * 55, "at most 54"),
    (TrainingJob, "run.v1", "no dots"),
    (TrainingJob, "1st", "start with a letter"),
    (ModelDeployment, "m" * 64, "at most 63"),
    (ModelDeployment, "serve.v1", "no dots"),
])
def test_names_beyond_the_budget_are_refused_by_the_models(kind, name, problem):
    assert any(problem in m for m in kind.NAME.messages(name))
