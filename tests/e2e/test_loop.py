"""The whole loop for real on this machine: the operator turns the digits examples into pods
that the node agent runs as processes; real PyTorch trains and serves; requests reach the model
through the pod address behind its Service."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from kubetest import condition, get_json, status_of, wait_for, wait_phase
from localplatform import ready_endpoints, volume_dir

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NS = "default"


def post(url: str, body: dict, timeout: float = 30) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def trainingjob(name: str, **spec) -> dict:
    base = json.loads(json.dumps(__import__("yaml").safe_load(
        (REPO / "examples" / "digits" / "trainingjob.yaml").read_text())))
    base["metadata"] = {"name": name}
    base["spec"].update(spec)
    return base


@pytest.fixture(scope="module")
def digits(platform):
    """examples/digits applied as a user would, and trained to the end."""
    platform.kubectl("apply", "-n", NS, "-f", str(REPO / "examples" / "digits"))
    wait_phase(platform, "tds", "digits", NS, "Ready", timeout=300)
    wait_for(lambda: status_of(platform, "tj", "digits-cnn", NS).get("phase") in ("Succeeded", "Failed"),
             timeout=600, interval=1, what="digits-cnn finished")
    return platform


def held_out(cluster) -> tuple[dict, list[str]]:
    """The Dataset's own test split, read from its volume: digits the model never trained on."""
    data = volume_dir(cluster, NS, "digits-data")
    manifest = json.loads((data / "manifest.json").read_text())
    return load_file(str(data / manifest["path"] / "test.safetensors")), manifest["classes"]


def test_the_digits_loop_trains_serves_and_collects_feedback(digits):
    tj = status_of(digits, "tj", "digits-cnn", NS)
    assert tj["phase"] == "Succeeded", condition(tj, "Ready")
    assert tj["model"]["metrics"]["accuracy"] >= 0.95
    assert tj["model"]["location"] == "pvc://digits-cnn-output/model"
    assert tj["progress"]["percent"] == 100.0  # reported by the runtime while it ran
    ds = status_of(digits, "tds", "digits", NS)
    assert ds["counts"]["total"] == 1797 and len(ds["classes"]) == 10

    md = wait_phase(digits, "mdep", "digits", NS, "Ready", timeout=300)
    assert md["modelDigest"] == tj["model"]["sha256"]
    [endpoint] = ready_endpoints(digits, NS, "digits")
    test, classes = held_out(digits)
    n = 40
    # /v1/predict, one request per digit.
    answers = [post(f"http://{endpoint}/v1/predict", {"instances": [test["x"][i].tolist()]})
               ["predictions"][0] for i in range(n)]
    right = sum(a["label"] == classes[int(test["y"][i])] for i, a in enumerate(answers))
    assert right >= 0.9 * n, f"{right}/{n} held-out digits right"
    # The Open Inference Protocol v2, the whole batch at once, as an existing client sends it.
    x = test["x"][:n].astype("float32")
    v2 = post(f"http://{endpoint}/v2/models/digits/infer", {"inputs": [{
        "name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
    probs = next(o for o in v2["outputs"] if o["name"] == "probabilities")
    k = probs["shape"][1]
    v2_labels = [max(range(k), key=lambda j: probs["data"][i * k + j]) for i in range(n)]
    assert sum(classes[j] == classes[int(test["y"][i])] for i, j in enumerate(v2_labels)) >= 0.9 * n

    # Feedback lands in the store on the ModelDeployment's feedback volume.
    wrong_or_first = next((a for i, a in enumerate(answers) if a["label"] != classes[int(test["y"][i])]),
                          answers[0])
    i = answers.index(wrong_or_first)
    reply = post(f"http://{endpoint}/v1/feedback",
                 {"predictionId": wrong_or_first["predictionId"], "label": classes[int(test["y"][i])]})
    assert reply["stored"] is True
    store = volume_dir(digits, NS, "digits-feedback") / "feedback.jsonl"

    def stored():
        lines = store.read_text().splitlines() if store.exists() else []
        return [r for r in map(json.loads, lines) if r["predictionId"] == wrong_or_first["predictionId"]]

    [record] = wait_for(stored, timeout=10, what=f"the feedback record in {store} "
                        f"(the volume holds {sorted(p.name for p in store.parent.iterdir())})")
    assert record["trueLabel"] == classes[int(test["y"][i])]


def test_distributed_training_survives_a_killed_worker(digits):
    spec = trainingjob("digits-ddp", workers=2, backoffLimit=2,
                       hyperparameters={"epochs": 12, "batchSize": 32, "optimizer": "adam",
                                        "learningRate": 0.001, "schedule": "cosine", "seed": 7},
                       checkpoint={"everyEpochs": 1, "keepLast": 2},
                       evaluation={"metric": "accuracy", "minimum": 0.9},
                       resources={"cpu": "500m", "memory": "1Gi"})
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(spec))
    # Wait until both workers train together and a checkpoint exists, then kill worker 1.
    wait_for(lambda: (status_of(digits, "tj", "digits-ddp", NS).get("progress") or {}).get("epoch", 0) >= 2,
             timeout=300, interval=0.5, what="two epochs of DDP")
    pods = get_json(digits, "pods", "-n", NS, "-l", "tauon.dev/trainingjob=digits-ddp,tauon.dev/attempt=0")["items"]
    assert len(pods) == 2
    worker1 = next(p for p in pods if p["metadata"]["annotations"]
                   ["batch.kubernetes.io/job-completion-index"] == "1")
    digits.kubectl("delete", "pod", worker1["metadata"]["name"], "-n", NS, "--wait=false")

    wait_for(lambda: status_of(digits, "tj", "digits-ddp", NS).get("phase") in ("Succeeded", "Failed"),
             timeout=600, interval=1, what="digits-ddp finished")
    tj = status_of(digits, "tj", "digits-ddp", NS)
    assert tj["phase"] == "Succeeded", condition(tj, "Ready")
    assert tj["restarts"] >= 1
    assert tj["model"]["metrics"]["accuracy"] >= 0.9
    assert tj["progress"]["epoch"] == 12
    # The next attempt resumed from the checkpoint instead of starting over.
    attempt = f"digits-ddp-a{tj['restarts']}"
    logs = digits.kubectl("logs", f"job/{attempt}", "-n", NS).stdout
    resumed = [json.loads(line) for line in logs.splitlines() if '"event": "resumed"' in line]
    assert resumed and resumed[0]["epoch"] >= 2, logs[-2000:]
    started = [json.loads(line) for line in logs.splitlines() if '"event": "start"' in line]
    assert started[0]["worldSize"] == 2


def test_a_retrained_model_rolls_out_without_failed_requests(digits):
    before = wait_phase(digits, "mdep", "digits", NS, "Ready", timeout=300)["modelDigest"]
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(trainingjob(
        "digits-cnn-v2", hyperparameters={"epochs": 10, "batchSize": 32, "optimizer": "adam",
                                          "learningRate": 0.001, "schedule": "cosine", "seed": 11},
        # The node agent has this machine's 2 CPUs and the server holds one of them.
        resources={"cpu": "1", "memory": "1Gi"})))
    v2 = wait_phase(digits, "tj", "digits-cnn-v2", NS, "Succeeded", timeout=600)
    after = v2["model"]["sha256"]
    assert after != before

    test, _ = held_out(digits)
    body = {"instances": [test["x"][0].tolist()]}
    seen, failures, stop = {}, [], threading.Event()

    def client():
        # A kube-proxy-like client: each request goes to a ready endpoint of the Service now.
        i = 0
        while not stop.is_set():
            endpoints = ready_endpoints(digits, NS, "digits")
            if not endpoints:
                failures.append("no ready endpoint")
                time.sleep(0.2)
                continue
            try:
                r = post(f"http://{endpoints[i % len(endpoints)]}/v1/predict", body, timeout=10)
                seen[r["modelDigest"]] = seen.get(r["modelDigest"], 0) + 1
            except (urllib.error.URLError, OSError) as e:
                failures.append(repr(e))
            i += 1

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(2)
    digits.kubectl("patch", "mdep", "digits", "-n", NS, "--type=merge",
                   "-p", '{"spec": {"model": {"trainingJobRef": {"name": "digits-cnn-v2"}}}}')
    wait_for(lambda: (s := status_of(digits, "mdep", "digits", NS)).get("modelDigest") == after
             and s.get("phase") == "Ready", timeout=300, interval=0.5, what="rolled out")
    time.sleep(2)
    stop.set()
    thread.join(timeout=30)
    assert not failures, failures[:5]
    assert seen.get(before, 0) > 0 and seen.get(after, 0) > 0, seen
