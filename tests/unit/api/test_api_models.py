"""The pydantic models: defaults, validators, aliases, parsing, and parity with the CRD."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import corpus
from kubetest import normalised
from tauon_operator.api import (
    API_VERSION,
    DATASETS,
    GROUP,
    MODELDEPLOYMENTS,
    TRAININGJOBS,
    VERSION,
    Autoscaling,
    Condition,
    Dataset,
    DatasetSpec,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelSource,
    Splits,
    TrainingJob,
    TrainingJobSpec,
    crdgen,
)
from tauon_operator.api.common import quantity_value

REPO = Path(__file__).resolve().parents[3]
KIND = {"Dataset": Dataset, "TrainingJob": TrainingJob, "ModelDeployment": ModelDeployment}
# kustomization.yaml files are kustomize's, not objects to apply
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.name != "kustomization.yaml")
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def spec_schema(kind: str) -> dict:
    cls = KIND[kind]
    return crdgen.crd(cls)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_constants():
    assert (GROUP, VERSION, API_VERSION) == ("tauon.dev", "v1alpha1", "tauon.dev/v1alpha1")
    assert (DATASETS, TRAININGJOBS, MODELDEPLOYMENTS) == (
        "datasets",
        "trainingjobs",
        "modeldeployments",
    )


def test_examples_exist():
    names = {p.relative_to(REPO / "examples").as_posix() for p in EXAMPLES}
    for kind in ("dataset", "trainingjob", "modeldeployment"):
        assert {f"{kind}-minimal.yaml", f"{kind}-full.yaml"} <= names
    assert {"digits/dataset.yaml", "digits/trainingjob.yaml", "digits/modeldeployment.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_examples_parse_and_defaults_agree_with_the_crd(path):
    """The API server's defaulting (from the CRD) fills the same values as pydantic."""
    for doc in documents(path):
        obj = KIND[doc["kind"]].parse(doc)
        assert obj.metadata.name == doc["metadata"]["name"]
        server_side = crdgen.apply_defaults(spec_schema(doc["kind"]), doc["spec"])
        assert normalised(server_side) == normalised(obj.spec.to_dict())


def test_minimal_trainingjob_defaults():
    spec = TrainingJobSpec.model_validate(
        {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"}}
    )
    assert spec.hyperparameters.epochs == 10
    assert spec.hyperparameters.optimizer == "adamw"
    assert spec.hyperparameters.schedule == "cosine"
    assert spec.precision == "fp32"
    assert spec.workers == 1 and spec.processes_per_worker == 1
    assert spec.resources.gpus == 0
    assert spec.early_stopping is None
    assert spec.output.model_name is None


def test_demo_trainingjob():
    (doc,) = documents(REPO / "examples/digits/trainingjob.yaml")
    job = TrainingJob.parse(doc)
    assert job.spec.model.architecture == "cnn"
    assert job.spec.hyperparameters.epochs <= 20
    assert job.spec.evaluation.minimum >= 0.95
    (md,) = documents(REPO / "examples/digits/modeldeployment.yaml")
    assert ModelDeployment.parse(md).spec.model.training_job_ref.name == job.metadata.name


def test_models_are_frozen_and_accept_both_names():
    a = Autoscaling.model_validate({"maxReplicas": 3, "targetCPUUtilizationPercentage": 50})
    b = Autoscaling(max_replicas=3, target_cpu_utilization_percentage=50)
    assert a == b
    with pytest.raises(ValidationError):
        a.max_replicas = 4  # type: ignore[misc]
    assert a.to_dict() == {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}


class _ReadOnly(Mapping):
    """Stands in for kopf's Body: a Mapping that is not a dict."""

    def __init__(self, data):
        self._data = data

    def __getitem__(self, key):
        value = self._data[key]
        return _ReadOnly(value) if isinstance(value, dict) else value

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


def test_parse_accepts_mappings_and_status():
    body = {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": "t", "namespace": "ns", "generation": 2, "uid": "u"},
        "spec": {"datasetRef": {"name": "d"}, "model": {"architecture": "lenet"}},
        "status": {
            "observedGeneration": 1,
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Training",
                    "message": "epoch 3/10",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
            "progress": {"epoch": 3, "totalEpochs": 10, "percent": 30.0},
            "metrics": {"latest": {"accuracy": 0.9, "loss": 0.3}},
            "somethingNewer": True,  # written by a newer runtime: ignored, not fatal
        },
    }
    job = TrainingJob.parse(_ReadOnly(body))
    assert job.metadata.generation == 2
    assert job.status.conditions[0].type == "Ready"
    assert job.status.metrics.latest["accuracy"] == 0.9
    assert job.status.progress.percent == 30.0


def test_condition_round_trip():
    c = Condition(
        type="Ready",
        status="True",
        reason="ModelServed",
        message="",
        last_transition_time="2025-01-01T00:00:00Z",
        observed_generation=3,
    )
    assert c.to_dict() == {
        "type": "Ready",
        "status": "True",
        "reason": "ModelServed",
        "message": "",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="Maybe", reason="X", last_transition_time="2025-01-01T00:00:00Z")
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", reason="not camel", last_transition_time="2025-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "model, data",
    [
        (Splits, {"train": 0.5, "validation": 0.1, "test": 0.1}),
        (DatasetSpec, {"source": {}}),
        (DatasetSpec, {"source": {"builtin": {"name": "digits"}, "pvc": {"claimName": "x"}}}),
        (DatasetSpec, {"source": {"s3": {"bucket": "b", "key": "k"}}}),
        (DatasetSpec, {"source": {"http": {"url": "https://x.io/a", "sha256": "ab"}}}),
        (ModelSource, {}),
        (ModelSource, {"uri": "https://x.io/m"}),
        (ModelSource, {"uri": "s3:///tauon/ns/models/m/", "sha256": SHA}),
        (ModelSource, {"uri": "s3://b", "sha256": SHA}),
        (ModelSource, {"uri": "gs://b/m", "sha256": SHA}),
        (ModelSource, {"trainingJobRef": {"name": "t"}, "sha256": SHA}),
        (Autoscaling, {"minReplicas": 3, "maxReplicas": 2}),
        (ModelDeploymentSpec, {"model": {"trainingJobRef": {"name": "t"}}, "replicas": 1,
                               "autoscaling": {"maxReplicas": 2}}),
        (TrainingJobSpec, {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"},
                           "precision": "fp16"}),
        (TrainingJobSpec, {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"},
                           "processesPerWorker": 2, "resources": {"gpus": 1}}),
        (TrainingJobSpec, {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"},
                           "unknownField": 1}),
    ],
)
def test_validators_reject(model, data):
    with pytest.raises(ValidationError):
        model.model_validate(data)


@pytest.mark.parametrize(
    "model, data",
    [
        (Splits, {"train": 0.7, "validation": 0.2, "test": 0.1}),
        (Splits, {"train": 1, "validation": 0, "test": 0}),
        (ModelSource, {"uri": "pvc://models/m.safetensors", "sha256": SHA}),
        (ModelSource, {"uri": f"s3://tauon/tauon/team-a/models/digits/{SHA}/", "sha256": SHA}),
        (ModelSource, {"uri": "https://models.example.com/digits/v1/", "sha256": SHA}),
        (Autoscaling, {"minReplicas": 2, "maxReplicas": 2}),
        (TrainingJobSpec, {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"},
                           "precision": "fp16", "processesPerWorker": 2, "resources": {"gpus": 2}}),
    ],
)
def test_validators_accept(model, data):
    model.model_validate(data)


def test_source_kind_and_quantities():
    spec = DatasetSpec.model_validate({"source": {"pvc": {"claimName": "data"}}, "storage": {"size": 5}})
    assert spec.source.kind == "pvc"
    assert spec.storage.size == "5"
    assert ModelDeploymentSpec.model_validate({"model": {"trainingJobRef": {"name": "t"}}}).desired_replicas == 1


# --- parity with the API server's corpus -------------------------------------------------------


def test_corpus_is_big_enough():
    assert len(corpus.REJECTED) >= 100 and len(corpus.ACCEPTED) >= 15


@pytest.mark.parametrize("path", corpus.REJECTED, ids=lambda p: p.stem)
def test_corpus_is_rejected_by_the_models_too(path):
    """What the API server rejects, the operator's models reject (immutability aside)."""
    case = corpus.load(path)
    assert case.expect, "a must-reject case names the field it is about (# expect:)"
    if case.update:
        first, second = case.docs
        KIND[first["kind"]].parse(first)  # the first document is valid
        KIND[second["kind"]].parse(second)  # the change is only invalid as a transition
        return
    (doc,) = case.docs
    with pytest.raises(ValidationError) as raised:
        KIND[doc["kind"]].parse(doc)
    # ... and for the same reason: the error is about the field the case is about.
    errors = [(".".join(map(str, e["loc"])), e["msg"]) for e in raised.value.errors()]
    field = case.expect.rsplit(".", 1)[-1]
    assert any(field in loc or field in msg for loc, msg in errors), errors


@pytest.mark.parametrize("path", corpus.ACCEPTED, ids=lambda p: p.stem)
def test_corpus_valid_variants_parse(path):
    for doc in corpus.load(path).docs:
        KIND[doc["kind"]].parse(doc)


@pytest.mark.parametrize("path", corpus.REJECTED + corpus.ACCEPTED, ids=lambda p: p.stem)
def test_corpus_names_are_only_wrong_in_name_cases(path):
    """A case is rejected for what it is about: its object name is valid unless it is a name
    case (one that sets `# name:`)."""
    case = corpus.load(path)
    if "name" in corpus.headers(path) and case.expect == "metadata.name":
        return
    for doc in case.docs:
        assert not KIND[doc["kind"]].NAME.messages(doc["metadata"]["name"]), path.name


@pytest.mark.parametrize("text, value", [
    ("1Gi", 2**30), ("1.5Gi", 1.5 * 2**30), ("5e9", 5e9), ("1E3", 1e3), ("1E", 1e18),
    ("500m", 0.5), (".5", 0.5), ("+2k", 2000), ("4294967296", 2**32),
])
def test_quantity_values_as_cel_reads_them(text, value):
    assert quantity_value(text) == pytest.approx(value)


@pytest.mark.parametrize("value, ok", [
    ("1", True), (2, True), ("0.5", True), ("5.", True), ("1e-3", True), ("+1Ki", True),
    ("0", False), (0, False), ("-1", False), (-1, False), ("0.0Gi", False), ("+0", False),
    ("0e3", False), ("2GB", False), ("1.5e1.5", False), (True, False), ("", False),
])
def test_memory_quantities_are_above_zero(value, ok):
    data = {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"},
            "resources": {"memory": value}}
    if ok:
        TrainingJobSpec.model_validate(data)
    else:
        with pytest.raises(ValidationError, match="above zero"):
            TrainingJobSpec.model_validate(data)


@pytest.mark.parametrize("cpu, stored", [(0.5, "0.5"), (1e-3, "0.001"), (2, "2"), ("250m", "250m")])
def test_cpu_takes_numbers_as_pods_do(cpu, stored):
    spec = TrainingJobSpec.model_validate({"datasetRef": {"name": "d"},
                                           "model": {"architecture": "cnn"}, "resources": {"cpu": cpu}})
    assert spec.resources.cpu == stored
