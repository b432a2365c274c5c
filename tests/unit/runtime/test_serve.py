"""The inference server end to end: a small CNN trained on the real digits, served over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest
import torch
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from localkube.procutil import free_port, wait_for_url
from tauon_runtime.config import ServeConfig
from tauon_runtime.contract.keys import ExitCode
from tauon_runtime.models import build_model, export_model
from tauon_runtime.serve import main
from tauon_runtime.serve.app import create_app, make_runner
from tauon_runtime.serve.model import ServedModel

pytestmark = pytest.mark.timeout(120)

HELD_OUT = 50
MODEL = "digits"


# ---------------------------------------------------------------------------------------------
# Fixtures: a CNN trained for a few seconds on the bundled digits, exported as Tauon exports it
# (once per session: test_serve_hostile.py and test_serve_fuzz.py import them)


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # the 0..255 scale of prepare
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:HELD_OUT], order[HELD_OUT:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


@pytest.fixture(scope="session")
def model_dir(digits, tmp_path_factory):
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a net this small trains 5x faster on one thread of a busy machine
    options = {"width": 16, "hidden": 64}
    net = build_model("cnn", 10, 1, 8, options)
    scaled = digits["x_train"].astype(np.float32) / 255.0
    mean, std = float(scaled.mean()), float(scaled.std())
    x = (torch.from_numpy(scaled) - mean) / std
    y = torch.from_numpy(digits["y_train"])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(8):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("export") / "model"
    card = {
        "name": MODEL,
        "architecture": "cnn",
        "modelOptions": options,
        "numClasses": 10,
        "classes": [str(i) for i in range(10)],
        "inputShape": [1, 8, 8],
        "preprocessing": {"resize": None, "normalize": True, "scale": 255.0, "mean": [mean], "std": [std]},
        "metrics": {},
        "datasetDigest": "sha256:test",
    }
    export_model(net, out, card)
    return out


@pytest.fixture(scope="session")
def card(model_dir):
    return json.loads((model_dir / "model.json").read_text())


@pytest.fixture(scope="session")
def served(model_dir):
    return ServedModel.load(str(model_dir), MODEL, device="cpu")


def config(model_dir, **overrides) -> ServeConfig:
    raw = {"modelName": MODEL, "modelDir": str(model_dir), "device": "cpu", "port": 8080}
    raw.update(overrides)
    return ServeConfig.model_validate(raw)


class ServeTestServer(TestServer):
    """A test server on the runner `tauon-runtime serve` uses (JSON transport errors too)."""

    async def _make_runner(self, **kwargs):
        return make_runner(self.app, **kwargs)


@contextlib.asynccontextmanager
async def client_for(cfg: ServeConfig, model: ServedModel | None = None):
    async with TestClient(ServeTestServer(create_app(cfg, model))) as client:
        yield client


def run(coro):
    return asyncio.run(coro)


def png(pixels: np.ndarray, size: int | None = None, fmt: str = "PNG") -> bytes:
    img = Image.fromarray(pixels, mode="L")
    if size:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


async def scrape(client) -> str:
    r = await client.get("/metrics")
    assert r.status == 200
    return await r.text()


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


# ---------------------------------------------------------------------------------------------
# Correct answers


def test_predict_array_is_correct_on_held_out_digits(model_dir, served, digits, card):
    async def go():
        async with client_for(config(model_dir, topK=3), served) as c:
            r = await c.post("/v1/predict", json={"instances": digits["x_test"].tolist()})
            assert r.status == 200, await r.text()
            return await r.json()

    body = run(go())
    preds = body["predictions"]
    assert len(preds) == HELD_OUT
    assert body["modelDigest"] == card["sha256"]
    correct = sum(p["label"] == str(t) for p, t in zip(preds, digits["y_test"], strict=True))
    assert correct >= 0.9 * HELD_OUT
    for p in preds:
        uuid.UUID(p["predictionId"])
        assert len(p["topK"]) == 3 and p["topK"][0]["label"] == p["label"]
        scores = [t["score"] for t in p["topK"]]
        assert scores == sorted(scores, reverse=True) and 0 < p["score"] <= 1
    assert len({p["predictionId"] for p in preds}) == HELD_OUT


def test_predict_images_png_jpeg_multipart(model_dir, served, digits):
    x, y = digits["x_test"][:, 0], digits["y_test"]

    async def go():
        labels = {}
        async with client_for(config(model_dir), served) as c:
            # 8x8 PNGs as they are, 64x64 PNGs resized by the server, JPEG, and multipart.
            for kind in ("png8", "png64"):
                labels[kind] = []
                for img in x:
                    data = png(img) if kind == "png8" else png(img, size=64)
                    r = await c.post("/v1/predict", data=data, headers={"Content-Type": "image/png"})
                    assert r.status == 200, await r.text()
                    labels[kind].append((await r.json())["predictions"][0]["label"])
            r = await c.post("/v1/predict", data=png(x[0], 32, "JPEG"), headers={"Content-Type": "image/jpeg"})
            assert r.status == 200
            form = FormData()
            for i in range(5):
                form.add_field("file", png(x[i], 16), filename=f"{i}.png", content_type="image/png")
            r = await c.post("/v1/predict", data=form)
            assert r.status == 200, await r.text()
            labels["multipart"] = [p["label"] for p in (await r.json())["predictions"]]
        return labels

    labels = run(go())
    truth = [str(t) for t in y]
    for kind in ("png8", "png64"):
        assert sum(a == b for a, b in zip(labels[kind], truth, strict=True)) >= 0.9 * HELD_OUT, kind
    assert labels["multipart"] == labels["png8"][:5]


def test_v2_infer_is_correct_on_held_out_digits(model_dir, served, digits):
    x, y = digits["x_test"], digits["y_test"]

    async def go():
        async with client_for(config(model_dir), served) as c:
            fp32 = {
                "id": "req-42",
                "inputs": [{"name": "input", "shape": [HELD_OUT, 1, 8, 8], "datatype": "FP32",
                            "data": x.astype(np.float32).ravel().tolist()}],
            }
            r = await c.post(f"/v2/models/{MODEL}/infer", json=fp32)
            assert r.status == 200, await r.text()
            full = await r.json()
            uint8 = {
                "inputs": [{"name": "input", "shape": [HELD_OUT, 1, 8, 8], "datatype": "UINT8", "data": x.tolist()}],
                "outputs": [{"name": "labels"}],
            }
            r = await c.post(f"/v2/models/{MODEL}/versions/1/infer", json=uint8)
            assert r.status == 200, await r.text()
            return full, await r.json()

    full, labels_only = run(go())
    assert full["id"] == "req-42" and full["model_name"] == MODEL
    outputs = {o["name"]: o for o in full["outputs"]}
    probs = outputs["probabilities"]
    assert probs["datatype"] == "FP32" and probs["shape"] == [HELD_OUT, 10]
    p = np.asarray(probs["data"]).reshape(HELD_OUT, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
    assert (p.argmax(axis=1) == y).mean() >= 0.9
    assert outputs["labels"]["data"] == [str(k) for k in p.argmax(axis=1)]
    assert [o["name"] for o in labels_only["outputs"]] == ["labels"]
    assert labels_only["outputs"][0]["data"] == outputs["labels"]["data"]
    assert len(full["parameters"]["predictionIds"]) == HELD_OUT


def test_v2_health_and_metadata(model_dir, served):
    async def go():
        async with client_for(config(model_dir), served) as c:
            got = {}
            for path in ("/v2/health/live", "/v2/health/ready", "/v2", f"/v2/models/{MODEL}",
                         f"/v2/models/{MODEL}/ready", "/v2/models/other", "/v2/models/other/ready"):
                r = await c.get(path)
                got[path] = (r.status, await r.json())
            return got

    got = run(go())
    assert got["/v2/health/live"] == (200, {"live": True})
    assert got["/v2/health/ready"] == (200, {"ready": True})
    assert got["/v2"][0] == 200 and got["/v2"][1]["name"] == "tauon"
    status, meta = got[f"/v2/models/{MODEL}"]
    assert status == 200 and meta["name"] == MODEL and meta["platform"] == "pytorch"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in meta["outputs"]
    assert got[f"/v2/models/{MODEL}/ready"][0] == 200
    assert got["/v2/models/other"][0] == 404 and "other" in got["/v2/models/other"][1]["error"]
    assert got["/v2/models/other/ready"][0] == 404


def test_not_ready_until_the_model_is_activated(model_dir):
    async def go():
        async with client_for(config(model_dir)) as c:
            live, ready = await c.get("/v2/health/live"), await c.get("/v2/health/ready")
            infer = await c.post(f"/v2/models/{MODEL}/infer", json={})
            return live.status, ready.status, infer.status

    assert run(go()) == (200, 503, 503)


# ---------------------------------------------------------------------------------------------
# Batching under concurrent load


def test_200_concurrent_requests_form_batches(model_dir, served, digits):
    x, y = digits["x_test"], digits["y_test"]
    cfg = config(model_dir, batching={"maxBatchSize": 32, "maxLatencyMs": 20})

    async def go():
        async with client_for(cfg, served) as c:
            async def one(i):
                r = await c.post("/v1/predict", json={"instances": [x[i % HELD_OUT].tolist()]})
                assert r.status == 200, await r.text()
                return (await r.json())["predictions"][0]["label"]

            labels = await asyncio.gather(*(one(i) for i in range(200)))
            return labels, await scrape(c)

    labels, text = run(go())
    assert len(labels) == 200
    assert sum(lab == str(y[i % HELD_OUT]) for i, lab in enumerate(labels)) >= 0.9 * 200
    batches = metric(text, "tauon_serve_batch_size_count")
    singles = metric(text, "tauon_serve_batch_size_bucket", le="1.0")
    assert metric(text, "tauon_serve_batch_size_sum") == 200
    assert batches < 200 and singles < batches, (batches, singles)


def test_batching_off_runs_one_request_per_forward(model_dir, served, digits):
    x = digits["x_test"]
    cfg = config(model_dir, batching={"maxBatchSize": 1, "maxLatencyMs": 50})

    async def go():
        async with client_for(cfg, served) as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", json={"array": x[i].tolist()}) for i in range(40)))
            assert all(r.status == 200 for r in rs)
            return await scrape(c)

    text = run(go())
    assert metric(text, "tauon_serve_batch_size_count") == 40
    assert metric(text, "tauon_serve_batch_size_bucket", le="1.0") == 40


# ---------------------------------------------------------------------------------------------
# Bad input: a clear 4xx, and the server stays up

GOOD = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
INFER = f"/v2/models/{MODEL}/infer"

MALFORMED = [
    # (method, path, content type, body, status, words in the error)
    ("POST", INFER, "application/json", {"inputs": [{**GOOD, "shape": [1, 1, 7, 7]}]}, 400, "shape [1, 1, 7, 7]"),
    ("POST", INFER, "application/json", {"inputs": [{**GOOD, "datatype": "BYTES"}]}, 400, "datatype"),
    ("POST", INFER, "application/json", {"inputs": [{**GOOD, "shape": [2, 1, 8, 8]}]}, 400, "needs 128"),
    ("POST", INFER, "application/json", {"inputs": [GOOD, GOOD]}, 400, "exactly 1"),
    ("POST", INFER, "application/json", {"inputs": [{**GOOD, "name": "x"}]}, 400, "unknown input 'x'"),
    ("POST", INFER, "application/json", {"inputs": [{**GOOD, "data": ["a"] * 64}]}, 400, "numbers"),
    ("POST", INFER, "application/json", {"inputs": [GOOD], "outputs": [{"name": "logits"}]}, 400, "logits"),
    ("POST", INFER, "application/json", b"{not json", 400, "not valid JSON"),
    ("POST", INFER, "application/json", [1, 2], 400, "JSON object"),
    ("POST", "/v2/models/nope/infer", "application/json", {"inputs": [GOOD]}, 404, "unknown model 'nope'"),
    ("POST", f"/v2/models/{MODEL}/versions/7/infer", "application/json", {"inputs": [GOOD]}, 404, "no version '7'"),
    ("POST", "/v1/predict", "image/png", b"\x89PNG\r\n\x1a\ngarbage", 400, "could not decode"),
    ("POST", "/v1/predict", "image/png", b"", 400, "empty"),
    ("POST", "/v1/predict", "text/html", b"<html>", 415, "Content-Type"),
    ("POST", "/v1/predict", "application/json", {"instances": [[1, 2, 3]]}, 400, "instances[0] has shape [3]"),
    ("POST", "/v1/predict", "application/json", {"images": []}, 400, "instances"),
    ("POST", "/v1/predict", "application/json", b"", 400, "empty"),
    ("POST", "/v1/predict?topK=zero", "application/json", {"array": [0] * 64}, 400, "topK"),
    ("GET", "/v1/nothing", None, None, 404, "Not Found"),
    ("GET", INFER, None, None, 405, "Method Not Allowed"),
]


def test_malformed_requests_get_clear_4xx(model_dir, served):
    async def go():
        results = []
        async with client_for(config(model_dir), served) as c:
            for method, path, ctype, body, *_ in MALFORMED:
                data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
                headers = {"Content-Type": ctype} if ctype else {}
                r = await c.request(method, path, data=data, headers=headers)
                results.append((r.status, await r.json()))
            ok = await c.post("/v1/predict", json={"array": [0] * 64})
            return results, ok.status, await scrape(c)

    results, ok, text = run(go())
    for (method, path, _, _, status, words), (got, body) in zip(MALFORMED, results, strict=True):
        assert got == status, (method, path, body)
        assert words in body["error"], (path, body)
    assert ok == 200  # still serving
    assert metric(text, "tauon_serve_errors_total", reason="bad_input") >= 12
    assert metric(text, "tauon_serve_requests_total", route="/v2/models/{name}/infer", code="400") >= 8


def test_body_over_the_limit_is_413(model_dir, served):
    cfg = config(model_dir, maxRequestBytes=4096)
    big = json.dumps({"instances": [[0] * 64] * 100}).encode()  # ~20 KB
    assert len(big) > 4096

    async def go():
        async with client_for(cfg, served) as c:
            declared = await c.post("/v1/predict", data=big, headers={"Content-Type": "application/json"})

            async def chunks():  # no Content-Length: the limit applies while streaming
                for i in range(0, len(big), 1000):
                    yield big[i : i + 1000]

            streamed = await c.post(INFER, data=chunks(), headers={"Content-Type": "application/json"})
            form = FormData()
            form.add_field("file", b"\0" * 10_000, filename="big.png", content_type="image/png")
            multipart = await c.post("/v1/predict", data=form)
            after = await c.post("/v1/predict", json={"array": [0] * 64})
            return [(r.status, await r.json()) for r in (declared, streamed, multipart)], after.status

    results, after = run(go())
    assert [s for s, _ in results] == [413, 413, 413], results
    assert all(body["error"] for _, body in results)
    assert after == 200


def test_slow_inference_times_out_with_504(model_dir, served):
    class Slow(type(served)):
        def forward(self, inputs):
            time.sleep(0.3)
            return super().forward(inputs)

    slow = Slow(served.module, served.card, served.device, MODEL)
    cfg = config(model_dir, requestTimeoutSeconds=0.1)

    async def go():
        async with client_for(cfg, slow) as c:
            r = await c.post("/v1/predict", json={"array": [0] * 64})
            live = await c.get("/v2/health/live")
            return r.status, await r.json(), live.status

    status, body, live = run(go())
    assert status == 504 and "0.1s" in body["error"]
    assert live == 200


def test_a_body_that_trickles_in_gets_408(model_dir, served):
    cfg = config(model_dir, requestTimeoutSeconds=0.2)

    async def go():
        async with client_for(cfg, served) as c:
            async def trickle():
                yield b'{"array": ['
                await asyncio.sleep(1.0)
                yield b"0]}"

            r = await c.post("/v1/predict", data=trickle(), headers={"Content-Type": "application/json"})
            return r.status, await r.json()

    status, body = run(go())
    assert status == 408 and "did not arrive" in body["error"]


def test_bodies_without_a_json_content_type_are_sniffed(model_dir, served, digits):
    sample = digits["x_test"][0]

    async def go():
        async with client_for(config(model_dir), served) as c:
            codes = []
            for ctype, data in (
                ("application/x-www-form-urlencoded", json.dumps({"array": sample.tolist()}).encode()),  # curl -d
                ("application/octet-stream", png(sample[0])),
                ("application/octet-stream", json.dumps({"instances": [sample.tolist()]}).encode()),
            ):
                r = await c.post("/v1/predict", data=data, headers={"Content-Type": ctype})
                codes.append(r.status)
            return codes

    assert run(go()) == [200, 200, 200]


# ---------------------------------------------------------------------------------------------
# Feedback


def test_feedback_lands_in_the_jsonl_file(model_dir, served, digits, tmp_path, card):
    path = tmp_path / "feedback" / "feedback.jsonl"
    cfg = config(model_dir, feedback={"enabled": True}, feedbackPath=str(path))
    x = digits["x_test"]

    async def go():
        async with client_for(cfg, served) as c:
            r = await c.post("/v1/predict", data=png(x[0, 0]), headers={"Content-Type": "image/png"})
            image_pred = (await r.json())["predictions"][0]
            r = await c.post("/v1/predict", json={"instances": [x[1].tolist()]})
            array_pred = (await r.json())["predictions"][0]
            wrong = next(lab for lab in map(str, range(10)) if lab != array_pred["label"])
            answers = [
                await c.post("/v1/feedback", json={"predictionId": image_pred["predictionId"], "label": image_pred["label"]}),
                await c.post("/v1/feedback", json={"predictionId": array_pred["predictionId"], "trueLabel": wrong, "score": 0}),
                await c.post("/v1/feedback", json={"predictionId": str(uuid.uuid4()), "label": "3"}),
                await c.post("/v1/feedback", json={"predictionId": array_pred["predictionId"], "label": "eleven"}),
                await c.post("/v1/feedback", json={"predictionId": array_pred["predictionId"]}),
                await c.post("/v1/feedback", json={"label": "3"}),
            ]
            codes = [r.status for r in answers]
            stats = await (await c.get("/v1/feedback/stats")).json()
            return image_pred, array_pred, wrong, codes, stats, await scrape(c)

    image_pred, array_pred, wrong, codes, stats, text = run(go())
    assert codes == [201, 201, 404, 400, 400, 400]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2
    first, second = records
    assert first["predictionId"] == image_pred["predictionId"] and first["correct"] is True
    assert first["modelDigest"] == card["sha256"] and first["modelName"] == MODEL
    assert first["input"]["source"] == "image" and first["input"]["shape"] == [1, 8, 8]
    np.testing.assert_array_equal(np.asarray(first["input"]["data"]), x[0])  # usable as training data
    assert second["predictedLabel"] == array_pred["label"] and second["trueLabel"] == wrong
    assert second["correct"] is False and second["score"] == 0
    np.testing.assert_array_equal(np.asarray(second["input"]["data"]), x[1])
    assert stats == {"enabled": True, "total": 2, "correct": 1, "incorrect": 1, "scoreOnly": 0,
                     "accuracy": 0.5, "byTrueLabel": {image_pred["label"]: 1, wrong: 1},
                     "byModelDigest": {card["sha256"][:12]: {"correct": 1, "incorrect": 1, "accuracy": 0.5}}}
    assert metric(text, "tauon_serve_feedback_total") == 2


def test_feedback_disabled_is_404(model_dir, served):
    async def go():
        async with client_for(config(model_dir), served) as c:
            r = await c.post("/v1/feedback", json={"predictionId": "x", "label": "1"})
            return r.status, await r.json(), await (await c.get("/v1/feedback/stats")).json()

    status, body, stats = run(go())
    assert status == 404 and "not enabled" in body["error"] and stats == {"enabled": False}


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics_expose_requests_latency_and_model_digest(model_dir, served, card):
    async def go():
        async with client_for(config(model_dir), served) as c:
            await c.post("/v1/predict", json={"array": [0] * 64})
            return await scrape(c)

    text = run(go())
    assert metric(text, "tauon_serve_model_info", model=MODEL, digest=card["sha256"], architecture="cnn") == 1
    assert metric(text, "tauon_serve_requests_total", route="/v1/predict", method="POST", code="200") == 1
    assert metric(text, "tauon_serve_request_duration_seconds_count", route="/v1/predict") == 1
    assert metric(text, "tauon_serve_batch_size_count") == 1
    assert metric(text, "tauon_serve_model_ready") == 1


# ---------------------------------------------------------------------------------------------
# Integrity and the real entry point


def test_sha256_mismatch_refuses_to_load(model_dir, tmp_path, caplog, monkeypatch):
    term = tmp_path / "termination-log"
    monkeypatch.setenv("TAUON_TERMINATION_LOG", str(term))
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"modelName": MODEL, "modelDir": str(model_dir), "device": "cpu",
                               "host": "127.0.0.1", "port": free_port(), "expectedSha256": "0" * 64}))
    assert main(["--config", str(cfg)]) == ExitCode.REJECTED
    assert "refusing to serve" in caplog.text and "0" * 64 in caplog.text
    assert json.loads(term.read_text())["error"] == "ModelIntegrity"


def test_tampered_weights_refuse_to_load(model_dir, tmp_path):
    tampered = tmp_path / "model"
    tampered.mkdir()
    (tampered / "model.json").write_text((model_dir / "model.json").read_text())
    weights = bytearray((model_dir / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(weights))
    cfg = config(tampered, host="127.0.0.1", port=free_port())

    async def go():
        from tauon_runtime.serve import serve

        task = asyncio.create_task(serve(cfg))
        seen_ready = False
        while not task.done():  # readiness never turns true, even while loading
            with contextlib.suppress(OSError):
                seen_ready |= http_get(f"http://127.0.0.1:{cfg.port}/v2/health/ready", timeout=0.5)[0] == 200
            await asyncio.sleep(0.01)
        return await task, seen_ready

    code, seen_ready = run(go())
    assert code == ExitCode.REJECTED and not seen_ready


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_real_server_process_serves_and_stops_on_sigterm(model_dir, digits, tmp_path):
    port = free_port()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"modelName: {MODEL}\nmodelDir: {model_dir}\ndevice: cpu\nhost: 127.0.0.1\nport: {port}\n")
    proc = subprocess.Popen([sys.executable, "-m", "tauon_runtime", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_url(f"http://127.0.0.1:{port}/v2/health/ready", 60, proc=proc)
        except ChildProcessError:
            pytest.fail(proc.stdout.read().decode())
        except TimeoutError:
            pytest.fail("the server never became ready")
        body = json.dumps({"instances": digits["x_test"][:10].tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            preds = json.loads(r.read())["predictions"]
        assert sum(p["label"] == str(t) for p, t in zip(preds, digits["y_test"][:10], strict=True)) >= 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        events = [json.loads(line) for line in proc.stdout.read().decode().splitlines() if line.startswith("{")]
        assert [e["event"] for e in events] == ["ready", "finished"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_answering_while_reporting_not_ready(model_dir, digits):
    """A rollout drops no request: after SIGTERM the server fails readiness (so Services stop
    routing to it) yet keeps answering for drainSeconds, then stops."""
    import aiohttp

    from tauon_runtime.serve import serve

    port = free_port()
    cfg = config(model_dir, host="127.0.0.1", port=port, drainSeconds=1.5)
    body = {"instances": [digits["x_test"][0].tolist()]}

    async def go():
        stop = asyncio.Event()
        server = asyncio.create_task(serve(cfg, stop=stop))
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{base}/v2/health/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.sleep(0.3)
            async with http.get(f"{base}/v2/health/ready") as r:
                assert r.status == 503
            async with http.post(f"{base}/v1/predict", json=body) as r:
                assert r.status == 200
        assert await asyncio.wait_for(server, timeout=10) == 0

    run(go())
