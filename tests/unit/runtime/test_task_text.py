"""text-classification end to end at unit speed: generated reviews or a JSONL/CSV file -> a
tokenizer trained on the train split -> padded token ids -> an LSTM -> test accuracy -> the model
card (with its tokenizer) -> raw text through the server, as JSON and as OIP v2 BYTES."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tauon_runtime.config import PrepareConfig, TrainConfig
from tauon_runtime.contract import ModelSpec
from tauon_runtime.data import prepare
from tauon_runtime.data.sources import DataError
from tauon_runtime.models import build_model
from tauon_runtime.report import Reporter
from tauon_runtime.serve.model import ServedModel
from tauon_runtime.tasks.text import builtin_sentiment, encode, train_tokenizer
from tauon_runtime.train import train

from test_serve import MODEL, client_for, config, digits, model_dir, run, served  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)
TASK = "text-classification"
LENGTH = 16


def prepare_cfg(out, **spec):
    return PrepareConfig.model_validate({"task": TASK, "outputDir": str(out), **spec})


@pytest.fixture(scope="module")
def sentiment_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentiment")
    prepare(prepare_cfg(out, source={"builtin": {"name": "sentiment"}},
                        preprocessing={"maxLength": LENGTH}), Reporter(enabled=False))
    return out


@pytest.fixture(scope="module")
def lstm_model(sentiment_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lstm")
    cfg = TrainConfig.model_validate({
        "model": {"task": TASK, "architecture": "lstm"},
        "hyperparameters": {"epochs": 4, "batchSize": 32, "optimizer": "adam",
                            "learningRate": 0.005},
        "datasetDir": str(sentiment_dir), "outputDir": str(out), "device": "cpu"})
    return train(cfg, Reporter(enabled=False)), out / "model"


def test_the_tokenizer_pads_after_the_text_and_maps_unseen_words_to_unknown():
    tok = train_tokenizer(["The food was good", "the room was bad!"], vocab_size=100)
    ids = encode(tok, ["the FOOD was good", "zebra", "the " * 40], max_length=6)
    assert ids.shape == (3, 6) and ids.dtype == np.float32
    assert list(ids[0, 4:]) == [0, 0] and all(ids[0, :4] > 1)  # lower-cased, padded with 0 after
    assert list(ids[1]) == [1, 0, 0, 0, 0, 0]  # an unseen word is [UNK] (1)
    assert all(ids[2] > 1)  # a long text is cut at max_length


def test_prepared_text_is_token_ids_with_the_tokenizer_in_the_manifest(sentiment_dir):
    manifest = json.loads((sentiment_dir / "manifest.json").read_text())
    assert manifest["task"] == TASK and manifest["shape"] == [LENGTH, 1, 1]
    assert manifest["classes"] == ["negative", "positive"]
    assert sum(manifest["counts"].values()) == 3000
    assert json.loads(manifest["tokenizer"])["model"]["type"] == "WordLevel"
    assert manifest["preprocessing"]["maxLength"] == LENGTH
    x = load_file(str(sentiment_dir / manifest["path"] / "test.safetensors"))["x"]
    assert x.shape[1:] == (LENGTH, 1, 1) and float(x.max()) < manifest["vocabSize"]


def test_the_generated_reviews_need_word_order():
    raw = builtin_sentiment(n=400, seed=1)
    texts = list(raw.x)
    assert any(" not " in t for t in texts) and any(" but " in t for t in texts)
    # "not" appears in positive and negative reviews alike: its class needs its neighbours.
    with_not = [raw.y[i] for i, t in enumerate(texts) if " not " in t]
    assert 0.25 < float(np.mean(with_not)) < 0.75


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_padding_never_changes_a_texts_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch, 2, 32, 1, {"vocabSize": 50}).eval()
    ids = torch.tensor([[5.0, 9.0, 3.0, 7.0]])
    short = torch.nn.functional.pad(ids, (0, 4))[:, :, None, None]  # [1, 8, 1, 1]
    long = torch.nn.functional.pad(ids, (0, 28))[:, :, None, None]  # [1, 32, 1, 1]
    with torch.no_grad():
        torch.testing.assert_close(model(short), model(long), rtol=1e-5, atol=1e-5)
        other = model(torch.nn.functional.pad(torch.tensor([[5.0, 9.0, 3.0, 8.0]]), (0, 4))[:, :, None, None])
    assert not torch.allclose(model(short), other)  # ...while a real token does


def test_an_lstm_learns_the_reviews_and_the_card_carries_the_tokenizer(lstm_model):
    result, model_dir = lstm_model
    assert result["metrics"]["accuracy"] >= 0.9
    card = json.loads((model_dir / "model.json").read_text())
    assert card["task"] == TASK and card["modelOptions"]["vocabSize"] > 2
    assert json.loads(card["tokenizer"])["model"]["type"] == "WordLevel"


def test_raw_text_is_classified_as_json_and_as_v2_bytes(lstm_model):
    _, model_dir = lstm_model
    served = ServedModel.load(str(model_dir), "model", device="cpu")
    texts = ["the food was not bad", "honestly the service was really rude",
             "the room was boring but the view was amazing"]
    words = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    head = json.dumps({"inputs": [{"name": "input", "shape": [3], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(words)}}]}).encode()

    async def go():
        async with client_for(config(model_dir, modelName="model"), served) as c:
            one = await (await c.post("/v1/predict", json={"text": texts[0]})).json()
            many = await (await c.post("/v1/predict", json={"text": texts})).json()
            v2 = await c.post("/v2/models/model/infer", json={"inputs": [
                {"name": "input", "shape": [3, 1], "datatype": "BYTES", "data": texts}]})
            v2_json = (v2.status, await v2.json())
            binary = await c.post("/v2/models/model/infer", data=head + words, headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(head))})
            binary_json = (binary.status, await binary.json())
            bad = await c.post("/v1/predict", json={"text": 5})
            long = await c.post("/v1/predict", json={"text": "word " * 5000})
            return one, many, v2_json, binary_json, (bad.status, await bad.json()), long.status

    one, many, (v2_status, v2), (bin_status, binary), bad, long = run(go())
    assert one["predictions"][0]["label"] == "positive"
    assert [p["label"] for p in many["predictions"]] == ["positive", "negative", "positive"]
    assert v2_status == 200 and bin_status == 200, (v2, binary)
    for body in (v2, binary):
        probs = np.array(body["outputs"][0]["data"]).reshape(3, 2)
        assert list(probs.argmax(1)) == [1, 0, 1]
    assert bad[0] == 400 and "text" in bad[1]["error"] and "valid string" in bad[1]["error"]
    assert long == 400


def test_text_sent_to_an_image_model_is_a_400_naming_why(model_dir, served):  # noqa: F811
    async def go():
        async with client_for(config(model_dir), served) as c:
            r = await c.post("/v1/predict", json={"text": "a seven"})
            v2 = await c.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
                {"name": "input", "shape": [1], "datatype": "BYTES", "data": ["a seven"]}]})
            return (r.status, await r.json()), (v2.status, await v2.json())

    (status, body), (v2_status, v2) = run(go())
    assert status == 400 and "does not take text" in body["error"]
    assert v2_status == 400 and "BYTES" in v2["error"]


def test_a_jsonl_file_with_named_keys_prepares_and_a_bad_line_is_named(tmp_path):
    rows = [{"review": f"the pizza was {w}", "stars": s} for w, s in
            [("good", "5"), ("bad", "1")] * 20]
    src = tmp_path / "reviews.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = prepare_cfg(tmp_path / "out", source={"pvc": {"claimName": "c", "path": str(src)}},
                      columns={"text": "review", "label": "stars"})
    manifest = prepare(cfg, Reporter(enabled=False))
    assert manifest["classes"] == ["1", "5"] and manifest["shape"] == [64, 1, 1]
    src.write_text(src.read_text() + '{"review": "no label"}\n')
    with pytest.raises(DataError, match=r"reviews.jsonl line 41: needs the keys 'review'"):
        prepare(prepare_cfg(tmp_path / "out2", source={"pvc": {"claimName": "c", "path": str(src)}},
                            columns={"text": "review", "label": "stars"}), Reporter(enabled=False))


def test_architectures_belong_to_their_task():
    with pytest.raises(ValueError, match="for task text-classification"):
        ModelSpec.model_validate({"task": TASK, "architecture": "cnn"})
    with pytest.raises(ValueError, match="for task image-classification"):
        ModelSpec.model_validate({"architecture": "transformer"})
    assert ModelSpec.model_validate({"task": TASK, "architecture": "gru"}).architecture == "gru"
