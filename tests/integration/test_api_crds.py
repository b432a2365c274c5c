"""The API on a real API server: examples apply, kubectl explains and lists, bad input bounces.

Fixtures (tests/conftest.py): `cluster` (a running control plane with `.kubectl()`), `crds`
(crds/*.yaml applied and Established), `namespace` (a fresh namespace per test).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

import corpus
from kubetest import normalised
from tauon_operator.api import Dataset, ModelDeployment, TrainingJob

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
# kustomization.yaml files are kustomize's, not objects to apply
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.name != "kustomization.yaml")
KIND = {"Dataset": Dataset, "TrainingJob": TrainingJob, "ModelDeployment": ModelDeployment}


def apply(cluster, namespace: str, text: str, *extra: str):
    return cluster.kubectl(
        "apply", "--validate=strict", "-n", namespace, *extra, "-f", "-", input=text, check=False
    )


def get_json(cluster, namespace: str, *what: str) -> dict:
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def eventually(check, timeout: float = 30, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_example_applies_and_server_defaults_match_the_models(cluster, crds, namespace, path):
    res = apply(cluster, namespace, path.read_text())
    assert res.returncode == 0, res.stderr
    for doc in yaml.safe_load_all(path.read_text()):
        stored = get_json(cluster, namespace, doc["kind"].lower(), doc["metadata"]["name"])
        # The API server filled the CRD's defaults; the operator's models fill theirs: the same.
        parsed = KIND[doc["kind"]].parse(stored)
        assert normalised(stored["spec"]) == normalised(parsed.spec.to_dict())


# --- kubectl experience ------------------------------------------------------------------------


def test_kubectl_explain_teaches_the_api(cluster, crds):
    def explained():
        res = cluster.kubectl("explain", "trainingjob.spec.workers", check=False)
        return res if res.returncode == 0 else None

    res = eventually(explained)  # the OpenAPI document is published shortly after Established
    assert res is not None, "kubectl explain trainingjob.spec.workers failed"
    assert "Number of worker pods" in res.stdout
    assert "integer" in res.stdout
    nested = cluster.kubectl("explain", "tj.spec.hyperparameters.optimizer").stdout
    assert "sgd" in nested
    source = cluster.kubectl("explain", "tds.spec.source").stdout
    assert "exactly one of builtin, synthetic, http, pvc, s3 or feedback" in " ".join(source.split())
    fmt = cluster.kubectl("explain", "mdep.spec.model.format").stdout
    assert "onnxruntime" in fmt and "safetensors" in fmt
    task = cluster.kubectl("explain", "tj.spec.model.task").stdout
    assert "tabular-classification" in task and "must be the Dataset's" in task
    label = cluster.kubectl("explain", "tds.spec.columns.label").stdout
    assert "class of each row" in label
    command = " ".join(cluster.kubectl("explain", "tj.spec.command").stdout.split())
    assert "exactly one of model or command" in command and "tauon_runtime.sdk" in command
    code = " ".join(cluster.kubectl("explain", "tj.spec.code").stdout.split())
    assert "mounted read-only at /code" in code and "persistentVolumeClaim" in code
    metric = " ".join(cluster.kubectl("explain", "tj.spec.evaluation.metric").stdout.split())
    assert "meanReturn" in metric
    predictor = " ".join(cluster.kubectl("explain", "mdep.spec.predictor").stdout.split())
    assert "load(model_dir)" in predictor and "className" in predictor


def test_get_tauon_lists_all_three_kinds(cluster, crds, namespace):
    for kind in ("dataset", "trainingjob", "modeldeployment"):
        res = apply(cluster, namespace, (REPO / f"examples/{kind}-minimal.yaml").read_text())
        assert res.returncode == 0, res.stderr
    names = cluster.kubectl("get", "tauon", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == [
        "dataset.tauon.dev/example-minimal",
        "modeldeployment.tauon.dev/example-minimal",
        "trainingjob.tauon.dev/example-minimal",
    ]
    for short in ("tds", "tj", "mdep"):
        assert "example-minimal" in cluster.kubectl("get", short, "-n", namespace).stdout
    headers = {
        "tds": ["NAME", "PHASE", "SAMPLES", "DIGEST", "AGE"],
        "tj": ["NAME", "PHASE", "PROGRESS", "ACCURACY", "AGE"],
        "mdep": ["NAME", "PHASE", "READY", "CHAMPION", "CANARY", "FEEDBACK", "AGE"],
    }
    for short, wanted in headers.items():
        table = cluster.kubectl("get", short, "-n", namespace).stdout.splitlines()
        assert table[0].split() == wanted, table[0]


def test_status_accepts_what_operator_and_runtime_write(cluster, crds, namespace):
    res = apply(cluster, namespace, (REPO / "examples/trainingjob-minimal.yaml").read_text())
    assert res.returncode == 0, res.stderr
    status = {
        "observedGeneration": 1,
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Training", "message": "epoch 3/10",
             "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Reconciling", "status": "True", "reason": "Training", "message": "",
             "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1},
        ],
        "startTime": "2025-01-01T00:00:00Z",
        "active": 1,
        "progress": {"epoch": 3, "totalEpochs": 10, "step": 150, "totalSteps": 500,
                     "percent": 30.0, "etaSeconds": 42},
        "metrics": {"latest": {"accuracy": 0.925, "loss": 0.31}, "best": {"accuracy": 0.93}},
        "latestCheckpoint": "/checkpoints/epoch-3.pt",
    }
    cluster.kubectl(
        "patch", "trainingjob", "example-minimal", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )
    stored = get_json(cluster, namespace, "trainingjob", "example-minimal")
    job = TrainingJob.parse(stored)
    assert job.status.metrics.latest["accuracy"] == 0.925
    assert [c.type for c in job.status.conditions] == ["Ready", "Reconciling"]
    row = cluster.kubectl("get", "tj", "example-minimal", "-n", namespace, "--no-headers").stdout
    # Accuracy is the exported model's test accuracy: empty while training; the wide view
    # shows the latest validation accuracy.
    assert row.split()[:3] == ["example-minimal", "Running", "30"] and "0.925" not in row
    wide = cluster.kubectl("get", "tj", "example-minimal", "-n", namespace, "--no-headers",
                           "-o", "wide").stdout
    assert "0.925" in wide.split()


# --- the corpus of malformed manifests ----------------------------------------------------------


def test_corpus_size():
    assert len(corpus.REJECTED) >= 100 and len(corpus.ACCEPTED) >= 15


@pytest.fixture(scope="module")
def corpus_namespace(cluster, crds):
    name = f"api-corpus-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("path", corpus.REJECTED, ids=lambda p: p.stem)
def test_malformed_manifest_is_rejected_with_its_field_path(cluster, corpus_namespace, path):
    case = corpus.load(path)
    ns = corpus_namespace
    if case.update:
        first, second = case.docs
        res = apply(cluster, ns, json.dumps(first))
        assert res.returncode == 0, f"the valid first document was rejected: {res.stderr}"
        doc = second
    else:
        (doc,) = case.docs
    res = apply(cluster, ns, json.dumps(doc))
    assert res.returncode != 0, f"{path.name} was accepted:\n{res.stdout}"
    error = res.stderr
    assert "Error from server" in error or "is invalid" in error, error  # the server said no
    assert case.expect in error, f"{case.expect!r} not named in: {error}"
    if case.message:
        assert case.message in error, f"{case.message!r} not in: {error}"
    # One sentence per field: no field is blamed twice (int-or-string's `anyOf` branches used
    # to repeat every type error). `<nil>` lines are the API server's own postscripts.
    blamed = [line[2:].split(":", 1)[0] for line in error.splitlines() if line.startswith("* ")]
    blamed = [field for field in blamed if field != "<nil>"]
    assert len(blamed) == len(set(blamed)), error
    # A rule never fails at run time (modulus by zero, index out of bounds) on a value that
    # is out of its own field's bounds: that field's error says it.
    assert "evaluating rule" not in error, error
    if not case.update:
        gone = cluster.kubectl("get", doc["kind"].lower(), doc["metadata"]["name"], "-n", ns,
                               check=False)
        assert gone.returncode != 0, "a rejected object must not exist"


@pytest.mark.parametrize("path", corpus.ACCEPTED, ids=lambda p: p.stem)
def test_valid_variant_is_accepted_as_written(cluster, corpus_namespace, path):
    case = corpus.load(path)
    for doc in case.docs:  # more than one document: a change that must be accepted
        res = apply(cluster, corpus_namespace, json.dumps(doc))
        assert res.returncode == 0, f"{path.name} was rejected: {res.stderr}"
    stored = get_json(cluster, corpus_namespace, doc["kind"].lower(), doc["metadata"]["name"])
    KIND[doc["kind"]].parse(stored)  # and what was stored, the operator can read
