"""The edge: model.onnx exported beside the safetensors and checked against PyTorch, served by
onnxruntime with the same endpoints and batching, in a process where torch cannot be imported."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from runtime_testlib import digits_train_config, events
from test_serve import HELD_OUT, MODEL, client_for, config, digits, model_dir, png, run, served  # noqa: F401

from localkube.procutil import free_port, wait_for_url
from tauon_runtime.config import TrainConfig
from tauon_runtime.data import PreparedDataset
from tauon_runtime.modelfiles import sha256_hex
from tauon_runtime.models import build_model, export_model, load_exported, normalize_input
from tauon_runtime.report import Reporter
from tauon_runtime.serve.model import ServedModel
from tauon_runtime.train import train

pytestmark = pytest.mark.timeout(240)

RUNTIME_SRC = Path(__file__).resolve().parents[3] / "runtime"


@pytest.fixture(scope="module")
def trained(digits_dir: Path, tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    """The seed CNN trained by `tauon-runtime train` on the prepared digits (a short recipe)."""
    out = tmp_path_factory.mktemp("edge-train")
    log = io.StringIO()
    cfg = digits_train_config(digits_dir, out, hyperparameters={"epochs": 6})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = train(TrainConfig.model_validate(cfg), Reporter(stream=log))
    finally:
        torch.set_num_threads(threads)
    return out / "model", result, events(log.getvalue())


def test_training_exports_onnx_checked_on_the_test_split(trained, digits_dir):
    out, result, log = trained
    card = json.loads((out / "model.json").read_text())
    onnx = card["onnx"]
    test = PreparedDataset(digits_dir).split("test")
    print("card.onnx:", json.dumps(onnx))
    assert onnx["file"] == "model.onnx" and onnx["sha256"] == sha256_hex((out / "model.onnx").read_bytes())
    assert onnx["exporter"] == "dynamo" and onnx["opset"] >= 17
    assert onnx["split"] == "test" and onnx["samples"] == len(test)
    assert onnx["agreement"] >= 0.999 and onnx["maxAbsDiff"] <= onnx["tolerance"] <= 1e-2
    assert next(e for e in log if e["event"] == "exported")["onnx"]["file"] == "model.onnx"
    assert card["sha256"] == result["model"]["sha256"]  # the model's digest is still the weights'


def test_onnx_predictions_agree_with_pytorch_on_the_digits_test_split(trained, digits_dir):
    """Done-when: ≥ 99.9 % the same predictions as PyTorch, recomputed here, not read from the card."""
    out, _, _ = trained
    test = PreparedDataset(digits_dir).split("test")
    model, card = load_exported(out)
    with torch.inference_mode():
        ref = model(normalize_input(test.x, card)).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": test.x.numpy().astype(np.float32)})[0]  # raw pixels: normalised in the graph
    agreement = float((got.argmax(1) == ref.argmax(1)).mean())
    diff = float(np.abs(got - ref).max())
    print(f"digits test split: {len(test)} samples, agreement {agreement:.4f}, max abs diff {diff:.3g}")
    assert agreement >= 0.999
    assert diff < 1e-3
    accuracy = float((got.argmax(1) == test.y.numpy()).mean())
    assert accuracy == pytest.approx(card["metrics"]["accuracy"], abs=1e-6)


def test_a_model_that_cannot_be_exported_keeps_its_safetensors_and_says_why(tmp_path):
    card = {"name": "m", "architecture": "cnn", "numClasses": 3, "classes": ["a", "b", "c"],
            "inputShape": [1, 8, 8]}  # no preprocessing: nothing to put in the graph
    out = export_model(build_model("cnn", 3, 1, 8), tmp_path / "model", card)
    assert out["onnx"]["file"] is None and "preprocessing" in out["onnx"]["reason"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json", "model.safetensors"]
    assert load_exported(tmp_path / "model")[1]["sha256"] == out["sha256"]


@pytest.mark.parametrize("arch", ["lenet", "mlp"])
def test_other_zoo_models_export_and_agree(arch, tmp_path):
    pre = {"scale": 255.0, "mean": [0.3], "std": [0.4]}
    card = {"architecture": arch, "numClasses": 10, "inputShape": [1, 8, 8], "preprocessing": pre}
    x = np.random.default_rng(1).integers(0, 256, (300, 1, 8, 8)).astype(np.float32)
    out = export_model(build_model(arch, 10, 1, 8).eval(), tmp_path / "model", card, check_inputs=x)
    assert out["onnx"]["file"] == "model.onnx", out["onnx"]
    assert out["onnx"]["agreement"] >= 0.999 and out["onnx"]["samples"] == 300


# --- serving with onnxruntime ----------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_served(model_dir):  # noqa: F811 (test_serve's fixture)
    return ServedModel.load(str(model_dir), MODEL, device="cpu", format="onnx")


def test_onnx_backend_answers_like_the_torch_backend(model_dir, served, onnx_served, digits):  # noqa: F811
    assert onnx_served.format == "onnx" and served.format == "safetensors"
    assert onnx_served.digest == served.digest and onnx_served.device == "cpu"
    x = digits["x_test"].astype(np.float32)
    np.testing.assert_allclose(onnx_served.forward(x), served.forward(x), atol=1e-5)

    async def go():
        async with client_for(config(model_dir, modelFormat="onnx", topK=2), onnx_served) as c:
            predict = await c.post("/v1/predict", json={"instances": digits["x_test"].tolist()})
            infer = await c.post(f"/v2/models/{MODEL}/infer", json={"inputs": [
                {"name": "input", "shape": [HELD_OUT, 1, 8, 8], "datatype": "UINT8",
                 "data": digits["x_test"].ravel().tolist()}]})
            # The binary tensor extension: UINT8 pixels in, FP32 probabilities out, as bytes.
            raw = digits["x_test"].astype("u1").tobytes()
            head = json.dumps({"inputs": [{"name": "input", "shape": [HELD_OUT, 1, 8, 8], "datatype": "UINT8",
                                           "parameters": {"binary_data_size": len(raw)}}],
                               "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
            binary = await c.post(f"/v2/models/{MODEL}/infer", data=head + raw, headers={
                "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))})
            assert binary.status == 200, await binary.text()
            payload = await binary.read()
            split = int(binary.headers["Inference-Header-Content-Length"])
            binary_probs = np.frombuffer(payload[split:], "<f4").reshape(HELD_OUT, 10)
            meta = await c.get(f"/v2/models/{MODEL}")
            bad = await c.post("/v1/predict", json={"array": [0] * 63})
            metrics = await (await c.get("/metrics")).text()
            return (predict.status, await predict.json()), (infer.status, await infer.json()), \
                await meta.json(), (bad.status, await bad.json()), metrics, binary_probs

    (ps, predict), (vs, infer), meta, (bs, bad), metrics, binary_probs = run(go())
    np.testing.assert_allclose(binary_probs, served.forward(x), atol=1e-5)
    assert ps == 200 and vs == 200
    want = [str(k) for k in served.forward(x).argmax(1)]
    assert [p["label"] for p in predict["predictions"]] == want
    labels = {o["name"]: o for o in infer["outputs"]}["labels"]["data"]
    assert labels == want
    assert meta["parameters"]["sha256"] == served.digest
    assert bs == 400 and "'array'" in bad["error"]
    assert 'tauon_serve_batch_size_count' in metrics


def test_onnx_format_without_an_onnx_file_is_a_load_error(tmp_path):
    export_model(build_model("cnn", 3, 1, 8), tmp_path / "m", {
        "architecture": "cnn", "numClasses": 3, "inputShape": [1, 8, 8]})
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    card["preprocessing"] = {"scale": 255.0, "mean": [0.0], "std": [1.0]}
    (tmp_path / "m" / "model.json").write_text(json.dumps(card))
    with pytest.raises(FileNotFoundError, match=r"no ONNX export .*preprocessing"):
        ServedModel.load(str(tmp_path / "m"), "m", device="cpu", format="onnx")


# Run the real entry point with torch (and torchvision) refused at import, and report at exit
# every attempt to import them.
NO_TORCH = textwrap.dedent("""
    import atexit, importlib.abc, json, sys
    attempts = []
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "torchvision"):
                attempts.append(name)
                raise ImportError(f"no module named {name!r} (this is the edge)")
    sys.meta_path.insert(0, NoTorch())
    atexit.register(lambda: print(json.dumps({"event": "imports", "torchAttempts": attempts,
        "torchLoaded": sorted(m for m in sys.modules if m.startswith("torch"))}), flush=True))
    from tauon_runtime.__main__ import main
    sys.exit(main(["serve", "--config", sys.argv[1]]))
""")


def _serve_without_torch(exported: Path, tmp_path: Path, fmt: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = tmp_path / f"serve-{fmt}.json"
    cfg.write_text(json.dumps({"modelName": MODEL, "modelDir": str(exported), "modelFormat": fmt,
                               "device": "cpu", "host": "127.0.0.1", "port": port, "drainSeconds": 0}))
    env = {"PYTHONPATH": str(RUNTIME_SRC), "PATH": "/usr/bin:/bin", "TAUON_TERMINATION_LOG": str(tmp_path / "term")}
    proc = subprocess.Popen([sys.executable, "-c", NO_TORCH, str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, port


def test_the_onnx_server_runs_where_torch_cannot_be_imported(model_dir, digits, tmp_path):  # noqa: F811
    proc, port = _serve_without_torch(model_dir, tmp_path, "onnx")
    try:
        try:
            wait_for_url(f"http://127.0.0.1:{port}/v2/health/ready", 60, proc=proc)
        except (ChildProcessError, TimeoutError):
            proc.kill()
            pytest.fail(proc.stdout.read().decode()[-3000:])
        body = json.dumps({"instances": digits["x_test"][:20].tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            preds = json.loads(r.read())["predictions"]
        assert sum(p["label"] == str(t) for p, t in zip(preds, digits["y_test"][:20], strict=True)) >= 17
        # An image: Pillow and numpy decode it, nothing of torch.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=png(digits["x_test"][0, 0], 32),
                                     headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["predictions"][0]["label"] == preds[0]["label"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = events(proc.stdout.read().decode())
    ready = next(e for e in log if e["event"] == "ready")
    assert ready["format"] == "onnx" and ready["device"] == "cpu"
    imports = next(e for e in log if e["event"] == "imports")
    assert imports == {"event": "imports", "torchAttempts": [], "torchLoaded": []}


def test_the_guard_bites_the_torch_backend_fails_without_torch(model_dir, tmp_path):  # noqa: F811
    proc, _ = _serve_without_torch(model_dir, tmp_path, "safetensors")
    assert proc.wait(timeout=60) == 1  # ExitCode.FAILED: the model could not be loaded
    imports = next(e for e in events(proc.stdout.read().decode()) if e["event"] == "imports")
    assert imports["torchAttempts"] and not imports["torchLoaded"]
