"""The operator hands spec fields to the runtime as they are: the runtime's run config must
accept every spec the API accepts (field names and types agree)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from tauon_operator.api import Dataset, ModelDeployment, TrainingJob
from tauon_operator.api.trainingjob import Architecture

config = pytest.importorskip("tauon_runtime.config")

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))


def _docs(kind: str) -> list:
    return [
        pytest.param(doc, id=path.relative_to(REPO / "examples").as_posix())
        for path in EXAMPLES
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == kind
    ]


def test_architectures_match_the_model_zoo():
    assert typing.get_args(Architecture) == config.ARCHITECTURES


@pytest.mark.parametrize("doc", _docs("Dataset"))
def test_dataset_spec_is_a_prepare_config(doc):
    spec = Dataset.parse(doc).spec.to_dict()
    prepared = config.PrepareConfig.model_validate({**spec, "outputDir": "/data"})
    assert prepared.source.kind == Dataset.parse(doc).spec.source.kind
    assert prepared.splits.train == spec["splits"]["train"]
    assert prepared.preprocessing.normalize == spec["preprocessing"]["normalize"]


@pytest.mark.parametrize("doc", _docs("TrainingJob"))
def test_trainingjob_spec_is_a_train_config(doc):
    spec = TrainingJob.parse(doc).spec.to_dict()
    train = config.TrainConfig.model_validate({**spec, "datasetDir": "/d", "outputDir": "/o"})
    assert train.hyperparameters.batch_size == spec["hyperparameters"]["batchSize"]
    assert train.model.architecture == spec["model"]["architecture"]
    assert train.evaluation.metric == spec["evaluation"]["metric"]


@pytest.mark.parametrize("doc", _docs("ModelDeployment"))
def test_modeldeployment_batching_and_feedback_fit_the_serve_config(doc):
    spec = ModelDeployment.parse(doc).spec.to_dict()
    serve = config.ServeConfig.model_validate(
        {"modelName": "m", "modelDir": "/m", "batching": spec["batching"], "feedback": spec["feedback"]}
    )
    assert serve.batching.max_batch_size == spec["batching"]["maxBatchSize"]
