"""examples/tabular for real on the local platform: the wine Dataset prepares, the mlp trains to
the gate in its pod, the served model answers JSON rows by feature name, and a TrainingJob whose
model.task is not its Dataset's fails with a condition that says so."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from kubetest import condition, post_json as post, remove, status_of, wait_for, wait_phase
from localplatform import ready_endpoints, volume_dir

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NS = "default"


def finished(cluster, name: str) -> dict:
    wait_for(lambda: status_of(cluster, "tj", name, NS).get("phase") in ("Succeeded", "Failed"),
             timeout=300, interval=1, what=f"{name} finished")
    return status_of(cluster, "tj", name, NS)


@pytest.fixture(scope="module")
def wine(platform):
    platform.kubectl("apply", "-n", NS, "-f", str(REPO / "examples" / "tabular"))
    wait_phase(platform, "tds", "wine", NS, "Ready", timeout=300)
    yield platform
    remove(platform, NS, str(REPO / "examples" / "tabular"), "tj/wine-cnn")


def test_wine_trains_to_the_gate_and_answers_json_rows(wine):
    tj = finished(wine, "wine-mlp")
    assert tj["phase"] == "Succeeded", condition(tj, "Ready")
    assert tj["model"]["metrics"]["accuracy"] >= 0.95
    md = wait_phase(wine, "mdep", "wine", NS, "Ready", timeout=300)
    assert md["modelDigest"] == tj["model"]["sha256"]
    [endpoint] = ready_endpoints(wine, NS, "wine")

    data = volume_dir(wine, NS, "wine-data")
    manifest = json.loads((data / "manifest.json").read_text())
    test = load_file(str(data / manifest["path"] / "test.safetensors"))
    rows = [dict(zip(manifest["features"], map(float, x.ravel()), strict=True)) for x in test["x"]]
    status, body = post(f"http://{endpoint}/v1/predict", {"features": rows})
    assert status == 200, body
    labels = [p["label"] for p in body["predictions"]]
    truth = [manifest["classes"][int(y)] for y in test["y"]]
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 0.9 * len(truth)
    status, body = post(f"http://{endpoint}/v1/predict", {"features": {"alcohol": 13.2}})
    assert status == 400 and "missing 'malic_acid'" in body["error"]


def test_a_model_task_other_than_the_datasets_fails_with_a_condition(wine):
    tj = {"apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "wine-cnn"},
          "spec": {"datasetRef": {"name": "wine"}, "model": {"architecture": "mlp"},
                   "hyperparameters": {"epochs": 1, "batchSize": 16}, "resources": {"cpu": "500m", "memory": "1Gi"}}}
    wine.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(tj))
    st = finished(wine, "wine-cnn")
    assert st["phase"] == "Failed"
    assert "model.task image-classification does not match the Dataset's task tabular-classification" in condition(st, "Ready")["message"]


@pytest.fixture
def csv_url(tmp_path):
    """A CSV a team would bring, served over HTTP on loopback (the pods run on this machine)."""
    rows = ["a,b,label", *(f"{i},{i * 2},{i % 2}" for i in range(30))]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/data.csv", hashlib.sha256(
        (tmp_path / "data.csv").read_bytes()).hexdigest()
    server.shutdown()


def test_a_label_column_that_does_not_exist_fails_the_dataset_naming_it(wine, csv_url):
    url, sha = csv_url
    ds = {"apiVersion": "tauon.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "churn"},
          "spec": {"task": "tabular-classification", "source": {"http": {"url": url, "sha256": sha}},
                   "columns": {"label": "churned"}}}
    wine.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(ds))
    wait_for(lambda: status_of(wine, "tds", "churn", NS).get("phase") == "Failed",
             timeout=180, interval=1, what="churn Failed")
    message = condition(status_of(wine, "tds", "churn", NS), "Ready")["message"]
    assert "columns.label 'churned' is not a column of data.csv; its columns are a, b, label" in message
