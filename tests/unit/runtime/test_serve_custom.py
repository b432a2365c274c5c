"""A predictor class behind the real server (KServe's custom model): /v1 and OIP v2 answers,
one bad instance refused without failing the requests batched with it, feedback, and weights
that are verified before the class ever sees them."""

from __future__ import annotations

import asyncio
import json
import textwrap

import numpy as np
import pytest
import torch

from test_serve import client_for, metric, run, scrape
from tauon_runtime.contract import ServeConfig
from tauon_runtime.modelfiles import ModelIntegrityError
from tauon_runtime.models.export import export_model
from tauon_runtime.serve.custom import CustomModel, load_class

PREDICTOR = '''
import numpy as np
import torch
from tauon_runtime import sdk

class Scaler:
    """y = w . x for 2 numbers; {"describe": x} answers a text."""
    example = [0.0, 0.0]

    def load(self, model_dir):
        open(model_dir + "/../loaded", "w").write("yes")
        _, weights = sdk.load_weights(model_dir)
        self.w = weights["weight"][0]

    def predict(self, instances):
        out = []
        for i in instances:
            if isinstance(i, dict):
                out.append(f"asked about {i['describe']}")
                continue
            x = torch.as_tensor(np.asarray(i, dtype=np.float32))
            if x.shape != (2,):
                raise ValueError(f"an instance is 2 numbers, got shape {list(x.shape)}")
            out.append(np.float32((self.w * x).sum()))
        return out
'''


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    (root / "code").mkdir()
    (root / "code" / "scaler.py").write_text(textwrap.dedent(PREDICTOR))
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[2.0, -1.0]]))
    card = export_model(net, root / "model", {"name": "scaler", "task": "custom", "architecture": "custom"}, onnx=False)
    return root, card["sha256"]


def cfg(root, **extra) -> ServeConfig:
    return ServeConfig.model_validate({
        "modelName": "scaler", "modelDir": str(root / "model"), "port": 8080,
        "predictor": {"className": "scaler:Scaler", "codeDir": str(root / "code")},
        "batching": {"maxBatchSize": 16, "maxLatencyMs": 20}, **extra})


def model(root, sha256) -> CustomModel:
    return CustomModel.load_predictor(str(root / "model"), "scaler", sha256, "scaler:Scaler", str(root / "code"))


def test_v1_answers_each_instance_and_takes_feedback(served, tmp_path):
    root, sha = served

    async def go():
        async with client_for(cfg(root, feedback={"enabled": True}, feedbackPath=str(tmp_path / "fb.jsonl")),
                              model(root, sha)) as client:
            r = await client.post("/v1/predict", json={"instances": [[1, 1], [3, 0], {"describe": "x"}]})
            body = await r.json()
            assert r.status == 200, body
            assert [p["output"] for p in body["predictions"]] == [1.0, 6.0, "asked about x"]
            assert body["modelDigest"] == sha
            pid = body["predictions"][1]["predictionId"]
            r = await client.post("/v1/feedback", json={"predictionId": pid, "label": "6.0"})
            assert r.status == 201 and (await r.json())["correct"] is True
            meta = await (await client.get("/v2/models/scaler")).json()
            assert meta["platform"] == "custom" and meta["parameters"]["predictor"] == "scaler:Scaler"

    run(go())


def test_a_bad_instance_fails_only_its_own_request(served):
    root, sha = served

    async def go():
        async with client_for(cfg(root), model(root, sha)) as client:
            bodies = [{"instances": [[i, 0]]} for i in range(12)]
            bodies[5] = {"instances": [[1, 2, 3]]}
            answers = await asyncio.gather(*(client.post("/v1/predict", json=b) for b in bodies))
            codes = [a.status for a in answers]
            assert codes == [400 if i == 5 else 200 for i in range(12)]
            bad = await answers[5].json()
            assert "the predictor refused the input: an instance is 2 numbers, got shape [3]" in bad["error"]
            assert [(await a.json())["predictions"][0]["output"] for i, a in enumerate(answers) if i != 5] == [
                2.0 * i for i in range(12) if i != 5]
            text = await scrape(client)  # the bad one did share a batch: 12 requests, fewer batches
            assert metric(text, "tauon_serve_batch_size_count") < 12

    run(go())


def test_v2_stacks_numeric_outputs_and_sends_others_as_json_bytes(served):
    root, sha = served

    async def go():
        async with client_for(cfg(root), model(root, sha)) as client:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 1, 0, 1]}]}
            r = await client.post("/v2/models/scaler/infer", json=body)
            out = (await r.json())["outputs"]
            assert r.status == 200
            assert out == [{"name": "output", "datatype": "FP32", "shape": [2], "data": [1.0, -1.0]}]
            r = await client.post("/v2/models/scaler/infer", json={"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
            assert r.status == 400 and "2 numbers" in (await r.json())["error"]

    run(go())


def test_weights_are_verified_before_the_class_sees_them(served, tmp_path):
    root, _ = served
    (root / "loaded").unlink(missing_ok=True)
    with pytest.raises(ModelIntegrityError):
        model(root, "0" * 64)
    assert not (root / "loaded").exists()


@pytest.mark.parametrize("name,message", [
    ("nowhere:Scaler", "cannot import 'nowhere'"),
    ("scaler:Missing", "module 'scaler' has no class 'Missing'"),
    ("json:JSONDecoder", "the class has no load() method"),
])
def test_a_predictor_that_cannot_be_loaded_is_named(served, name, message):
    root, _ = served
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_class(name, str(root / "code"))


def test_a_custom_model_without_its_predictor_is_refused_by_the_classifier(served):
    from tauon_runtime.serve.model import ServedModel

    root, sha = served
    with pytest.raises(ValueError, match="serve it through its predictor class"):
        ServedModel.load(str(root / "model"), "scaler", sha, device="cpu")
    assert json.loads((root / "model" / "model.json").read_text())["task"] == "custom"
