"""tabular-classification end to end at unit speed: CSV/builtin -> prepared tensors -> training
-> test accuracy -> the model card -> a JSON row and an OIP v2 FP32 tensor through the server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tauon_runtime.config import PrepareConfig, TrainConfig
from tauon_runtime.contract import ModelSpec
from tauon_runtime.data import prepare
from tauon_runtime.data.sources import DataError
from tauon_runtime.report import Reporter
from tauon_runtime.serve.model import ServedModel
from tauon_runtime.tasks.tabular import feature_stats
from tauon_runtime.train import train

from test_serve import client_for, config, run

pytestmark = pytest.mark.timeout(120)
TASK = "tabular-classification"


def prepare_cfg(out, **spec):
    return PrepareConfig.model_validate({"task": TASK, "outputDir": str(out), **spec})


@pytest.fixture(scope="module")
def wine_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wine")
    prepare(prepare_cfg(out, source={"builtin": {"name": "wine"}}), Reporter(enabled=False))
    return out


@pytest.fixture(scope="module")
def wine_model(wine_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wine-train")
    cfg = TrainConfig.model_validate(
        {
            "model": {"task": TASK, "architecture": "mlp", "options": {"hidden": [64]}},
            "hyperparameters": {"epochs": 30, "batchSize": 16, "optimizer": "adam", "learningRate": 0.003},
            "datasetDir": str(wine_dir),
            "outputDir": str(out),
            "device": "cpu",
        }
    )
    return train(cfg, Reporter(enabled=False)), out / "model"


def test_feature_stats_standardise_and_guard_constant_columns():
    x = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    mean, std = feature_stats(x)
    assert mean == [2.0, 5.0] and std == [1.0, 1.0]  # the constant column gets std 1, not 0


def test_prepared_wine_is_features_as_channels_with_train_only_statistics(wine_dir):
    manifest = json.loads((wine_dir / "manifest.json").read_text())
    assert manifest["task"] == TASK
    assert manifest["shape"] == [13, 1, 1] and manifest["features"][0] == "alcohol"
    assert manifest["classes"] == ["class_0", "class_1", "class_2"]
    train_x = load_file(str(wine_dir / manifest["path"] / "train.safetensors"))["x"]
    assert train_x.dtype == np.float32 and train_x.shape[1:] == (13, 1, 1)
    mean = train_x[:, :, 0, 0].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(manifest["preprocessing"]["mean"], mean, rtol=1e-6)
    assert manifest["preprocessing"]["scale"] == 1.0


def test_wine_trains_to_095_and_the_card_records_features(wine_model):
    result, model_dir = wine_model
    assert result["metrics"]["accuracy"] >= 0.95
    card = json.loads((model_dir / "model.json").read_text())
    assert card["task"] == TASK and len(card["features"]) == 13
    assert len(card["preprocessing"]["mean"]) == 13 and "resize" not in card["preprocessing"]


def test_a_json_row_and_a_v2_fp32_tensor_are_answered(wine_model, wine_dir):
    from sklearn.datasets import load_wine

    _, model_dir = wine_model
    wine = load_wine()
    served = ServedModel.load(str(model_dir), "model", device="cpu")
    picks = [0, 70, 170]  # one of each cultivar, as a user would type them in
    rows = [dict(zip(wine.feature_names, map(float, wine.data[i]), strict=True)) for i in picks]

    async def go():
        async with client_for(config(model_dir, modelName="model"), served) as c:
            r = await c.post("/v1/predict", json={"features": rows[0]})
            assert r.status == 200, await r.text()
            one = (await r.json())["predictions"][0]["label"]
            r = await c.post("/v1/predict", json={"features": rows})
            many = [p["label"] for p in (await r.json())["predictions"]]
            v2 = {"inputs": [{"name": "input", "shape": [3, 13], "datatype": "FP32",
                              "data": wine.data[picks].astype(np.float32).ravel().tolist()}]}
            r = await c.post("/v2/models/model/infer", json=v2)
            assert r.status == 200, await r.text()
            probs = np.array((await r.json())["outputs"][0]["data"]).reshape(3, 3)
            bad = await c.post("/v1/predict", json={"features": {**rows[0], "alcohol": "high"}})
            missing = await c.post("/v1/predict", json={"features": {"alcohol": 13.2}})
            return one, many, probs, (bad.status, await bad.json()), (missing.status, await missing.json())

    one, many, probs, bad, missing = run(go())
    assert one == "class_0" and many == ["class_0", "class_1", "class_2"]
    assert list(probs.argmax(1)) == [0, 1, 2]
    assert bad[0] == 400 and "features.alcohol must be a number" in bad[1]["error"]
    assert missing[0] == 400 and "'malic_acid'" in missing[1]["error"]


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


@pytest.mark.parametrize(
    ("columns", "value", "error"),
    [
        ({"label": "kind"}, 1.0, "columns.label 'kind' is not a column of data.csv"),
        ({"features": ["a", "z"]}, 1.0, "columns.features 'z' not in data.csv"),
        ({}, "tall", "feature column 'b' is not numeric: line 2 has 'tall'"),
    ],
)
def test_bad_csv_names_the_column(tmp_path, columns, value, error):
    src = write_csv(tmp_path / "data.csv", ["a", "b", "label"],
                    [[i, value if i == 0 else i * 2, i % 2] for i in range(20)])
    cfg = prepare_cfg(tmp_path / "out", source={"pvc": {"claimName": "c", "path": str(src)}},
                      columns=columns)
    with pytest.raises(DataError, match=error.replace("(", r"\(")):
        prepare(cfg, Reporter(enabled=False))
    assert not (tmp_path / "out").exists()  # a failed first prepare leaves nothing behind


def test_a_csv_with_named_columns_prepares_in_the_given_order(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"{v:.3f}" for v in rng.normal(size=3)] + [["no", "yes"][i % 2]] for i in range(40)]
    src = write_csv(tmp_path / "data.csv", ["x1", "x2", "x3", "churn"], rows)
    cfg = prepare_cfg(tmp_path / "out", source={"pvc": {"claimName": "c", "path": str(src)}},
                      columns={"label": "churn", "features": ["x3", "x1"]})
    manifest = prepare(cfg, Reporter(enabled=False))
    assert manifest["features"] == ["x3", "x1"] and manifest["shape"] == [2, 1, 1]
    assert manifest["classes"] == ["no", "yes"]


def test_an_image_architecture_is_refused_for_tabular():
    with pytest.raises(ValueError, match="architecture must be one of mlp for task tabular"):
        ModelSpec.model_validate({"task": TASK, "architecture": "resnet18"})


def test_a_model_task_other_than_the_datasets_is_refused(wine_dir, tmp_path):
    cfg = TrainConfig.model_validate(
        {"model": {"architecture": "mlp"}, "datasetDir": str(wine_dir), "outputDir": str(tmp_path), "device": "cpu"}
    )
    with pytest.raises(ValueError, match="model.task image-classification does not match the Dataset's task tabular"):
        train(cfg, Reporter(enabled=False))


def test_breast_cancer_prepares_30_named_features_and_two_classes(tmp_path):
    manifest = prepare(prepare_cfg(tmp_path, source={"builtin": {"name": "breast_cancer"}}),
                       Reporter(enabled=False))
    assert manifest["shape"] == [30, 1, 1] and manifest["classes"] == ["malignant", "benign"]
    assert manifest["features"][0] == "mean radius" and sum(manifest["counts"].values()) == 569
    assert all(s > 0 for s in manifest["preprocessing"]["std"])


def test_the_same_source_gives_the_same_digest(tmp_path):
    one = prepare(prepare_cfg(tmp_path / "a", source={"builtin": {"name": "wine"}}), Reporter(enabled=False))
    two = prepare(prepare_cfg(tmp_path / "b", source={"builtin": {"name": "wine"}}), Reporter(enabled=False))
    image = prepare(PrepareConfig.model_validate({"source": {"builtin": {"name": "digits"}},
                                                  "outputDir": str(tmp_path / "c")}), Reporter(enabled=False))
    assert one["digest"] == two["digest"] != image["digest"]
    assert image["task"] == "image-classification" and "features" not in image
