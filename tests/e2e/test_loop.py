"""The whole loop for real on this machine: the operator turns the digits examples into pods
that the node agent runs as processes; real PyTorch trains and serves; requests reach the model
through the pod address behind its Service."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import obstore
import pytest
from safetensors.numpy import load_file

from kubetest import condition, get_json, new_namespace, status_of, wait_for, wait_phase
from localplatform import grant_store, ready_endpoints, tampered_copy, volume_dir

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
    # An immutable version in the artifact store, with its lineage.
    sha = tj["model"]["sha256"]
    ds = status_of(digits, "tds", "digits", NS)
    assert (tj["model"]["name"], tj["model"]["trainingJob"]) == ("digits", "digits-cnn")
    assert tj["model"]["location"] == f"s3://tauon/tauon/{NS}/models/digits/{sha}/"
    assert tj["model"]["datasetDigest"] == ds["digest"]
    assert tj["progress"]["percent"] == 100.0  # reported by the runtime while it ran
    assert ds["counts"]["total"] == 1797 and len(ds["classes"]) == 10
    assert ds["location"] == f"s3://tauon/tauon/{NS}/datasets/digits/{ds['digest'].removeprefix('sha256:')}/"

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

    # Feedback lands in the artifact store, where every replica reads and counts it, and the
    # ModelDeployment's status counts it.
    wrong_or_first = next((a for i, a in enumerate(answers) if a["label"] != classes[int(test["y"][i])]),
                          answers[0])
    i = answers.index(wrong_or_first)
    truth = classes[int(test["y"][i])]
    reply = post(f"http://{endpoint}/v1/feedback",
                 {"predictionId": wrong_or_first["predictionId"], "label": truth})
    assert reply["stored"] is True and reply["correct"] is (wrong_or_first["label"] == truth)
    store = digits.object_store
    prefix = f"tauon/{NS}/feedback/digits/records/"
    keys = [o["path"] for batch in obstore.list(store.client(), prefix) for o in batch]
    records = [json.loads(bytes(obstore.get(store.client(), k).bytes())) for k in keys]
    [record] = [r for r in records if r["predictionId"] == wrong_or_first["predictionId"]]
    assert record["trueLabel"] == truth and record["modelDigest"] == sha
    assert record["input"]["shape"] == [1, 8, 8]
    # (the console's module, before this one on the same platform, may have sent some too)
    md = wait_for(lambda: (s := status_of(digits, "mdep", "digits", NS)).get("feedbackCount")
                  == len(records) and s, timeout=60, interval=1, what="status.feedbackCount")
    assert md["feedbackCount"] == len(records)
    assert md["feedbackAccuracy"] == sum(r["correct"] is True for r in records) / len(records)
    # The model-version history: the champion's lineage, offline and live accuracy.
    [champion] = [v for v in md["models"] if v["state"] == "Champion"]
    assert (champion["digest"], champion["trainingJob"], champion["datasetDigest"]) == (
        sha, "digits-cnn", tj["model"]["datasetDigest"])
    assert champion["testAccuracy"] == tj["model"]["metrics"]["accuracy"]
    assert champion["liveFeedback"] == sum(r["correct"] is not None for r in records)
    claims = digits.kubectl("get", "pvc", "-n", NS, "-o", "name").stdout.split()
    assert "persistentvolumeclaim/digits-feedback" not in claims  # the store holds it all


def test_feedback_becomes_a_new_dataset_version_on_top_of_the_base(digits):
    md = wait_phase(digits, "mdep", "digits", NS, "Ready", timeout=300)
    [endpoint] = ready_endpoints(digits, NS, "digits")
    # A user's own drawing of a 7 (not one of the Dataset's samples), corrected to "7".
    seven = [[[0, 255, 255, 255, 255, 255, 255, 0]] + [[0] * (7 - r) + [255] + [0] * r for r in range(7)]]
    [answer] = post(f"http://{endpoint}/v1/predict", {"instances": [seven]})["predictions"]
    assert post(f"http://{endpoint}/v1/feedback",
                {"predictionId": answer["predictionId"], "label": "7"})["stored"] is True
    base = status_of(digits, "tds", "digits", NS)
    name = f"digits-fb-{uuid.uuid4().hex[:6]}"
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "tauon.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": name},
        "spec": {"source": {"feedback": {"modelDeploymentRef": {"name": "digits"},
                                         "baseDatasetRef": {"name": "digits"}}}}}))
    try:
        fb = wait_phase(digits, "tds", name, NS, "Ready", timeout=180)
        assert fb["digest"] != base["digest"] and md["modelDigest"]
        # The test and validation splits are the base's; training gained the feedback.
        assert (fb["counts"]["test"], fb["counts"]["validation"]) == (
            base["counts"]["test"], base["counts"]["validation"])
        assert fb["counts"]["train"] > base["counts"]["train"]
        assert fb["location"].startswith(f"s3://tauon/tauon/{NS}/datasets/{name}/")
    finally:
        digits.kubectl("delete", "tds", name, "-n", NS, "--wait=false")


def test_a_canary_gets_exactly_its_share_whatever_the_replica_counts(digits):
    """One stable and one canary replica at 20 %: a share of pods would give the canary half."""
    name = f"split-{uuid.uuid4().hex[:6]}"
    ref = {"trainingJobRef": {"name": "digits-cnn"}}
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({
        "apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {"model": ref, "replicas": 2, "canary": {"model": ref, "trafficPercent": 20},
                 "resources": {"cpu": "100m", "memory": "1Gi"}}}))
    try:
        md = wait_phase(digits, "mdep", name, NS, "Ready", timeout=300)
        assert (md["replicas"]["ready"], md["canary"]["readyReplicas"]) == (2, 1)
        # The Service fronts the stable pod only; it forwards the canary's share.
        [endpoint] = wait_for(lambda: ready_endpoints(digits, NS, name), timeout=60, what="endpoints")
        test, _ = held_out(digits)
        sent = 0

        def send(n: int) -> None:
            nonlocal sent
            for _ in range(n):  # every request answered, wherever it went
                post(f"http://{endpoint}/v1/predict", {"instances": [test["x"][sent % len(test["x"])].tolist()]})
                sent += 1

        def forwarded() -> float:
            with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as r:
                text = r.read().decode()
            return sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith('tauon_serve_canary_forwarded_total{outcome="ok"}'))

        def measured(at_least: int) -> dict:
            return wait_for(lambda: (c := status_of(digits, "mdep", name, NS).get("canary") or {})
                            .get("measuredRequests", 0) >= at_least and c, timeout=60, interval=1,
                            what=f"status.canary.measuredRequests >= {at_least}")

        # Until the canary's name resolves in the stable pod, its share is served there.
        wait_for(lambda: send(5) or forwarded() > 0, timeout=60, what="a first forwarded request")
        before = measured(sent)
        send(500)
        after = measured(sent)
        assert after["measuredRequests"] - before["measuredRequests"] == 500
        share = (after["measuredPercent"] * after["measuredRequests"]
                 - before["measuredPercent"] * before["measuredRequests"]) / 500
        assert abs(share - 20) <= 5, (before, after)
        assert after["trafficPercent"] == 20
    finally:
        digits.kubectl("delete", "mdep", name, "-n", NS, "--wait=false")


def model_deployment(name: str, **model) -> str:
    return json.dumps({"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment",
                       "metadata": {"name": name},
                       "spec": {"model": model, "resources": {"cpu": "100m", "memory": "1Gi"}}})


def right_answers(endpoint: str, test, classes, n: int = 20) -> int:
    return sum(post(f"http://{endpoint}/v1/predict", {"instances": [test["x"][i].tolist()]})
               ["predictions"][0]["label"] == classes[int(test["y"][i])] for i in range(n))


def test_a_stored_model_is_served_in_another_namespace_and_a_tampered_one_is_refused(digits):
    model = status_of(digits, "tj", "digits-cnn", NS)["model"]
    uri, sha = model["location"], model["sha256"]
    team = new_namespace(digits, f"team-b-{uuid.uuid4().hex[:6]}")
    try:
        grant_store(digits, team)
        digits.kubectl("apply", "-n", team, "-f", "-", input=model_deployment("digits", uri=uri, sha256=sha))
        md = wait_phase(digits, "mdep", "digits", team, "Ready", timeout=180)
        assert md["modelDigest"] == sha
        [endpoint] = ready_endpoints(digits, team, "digits")
        test, classes = held_out(digits)
        assert right_answers(endpoint, test, classes) >= 18

        # The same version copied to another key with one bit of the weights flipped.
        bad = tampered_copy(digits, uri)
        assert bad == uri.replace("/models/digits/", "/models/tampered/")
        t0 = time.monotonic()
        digits.kubectl("apply", "-n", team, "-f", "-",
                       input=model_deployment("tampered", uri=bad, sha256=sha))
        failed = wait_phase(digits, "mdep", "tampered", team, "Failed", timeout=30)
        ready = condition(failed, "Ready")
        assert ready["reason"] == "ChecksumMismatch", ready
        assert "model.safetensors" in ready["message"], ready
        print(f"tampered model Failed after {time.monotonic() - t0:.1f}s: {ready['message']}")
    finally:
        # waited for: its pods' CPU goes back to the node before the next test asks for it
        digits.kubectl("delete", "namespace", team, "--timeout=120s", check=False, timeout=150)


def test_a_namespace_without_the_store_credentials_is_told_which_secret(digits):
    model = status_of(digits, "tj", "digits-cnn", NS)["model"]
    team = new_namespace(digits, f"team-c-{uuid.uuid4().hex[:6]}")
    try:
        digits.kubectl("apply", "-n", team, "-f", "-", input=model_deployment(
            "digits", uri=model["location"], sha256=model["sha256"]))
        md = wait_phase(digits, "mdep", "digits", team, "Degraded", timeout=60)
        ready = condition(md, "Ready")
        assert ready["reason"] == "CreateContainerConfigError", ready
        assert 'secret "tauon-store" not found' in ready["message"], ready
    finally:
        # waited for: its pods' CPU goes back to the node before the next test asks for it
        digits.kubectl("delete", "namespace", team, "--timeout=120s", check=False, timeout=150)


def test_the_pvc_store_works_without_a_read_write_many_class(digits):
    """This cluster's StorageClass is block storage: it refuses ReadWriteMany claims. A model
    kept on its claim (output.store: pvc) trains and serves all the same."""
    rwx = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
           "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(rwx))
    wait_for(lambda: "ProvisioningFailed" in digits.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=shared").stdout,
        timeout=30, what="the RWX claim refused")
    assert get_json(digits, "pvc", "shared", "-n", NS)["status"]["phase"] == "Pending"
    digits.kubectl("delete", "pvc", "shared", "-n", NS, "--wait=false")

    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(trainingjob(
        "digits-pvc", output={"store": "pvc"}, resources={"cpu": "500m", "memory": "1Gi"},
        hyperparameters={"epochs": 4, "batchSize": 32, "optimizer": "adam", "learningRate": 0.002,
                         "seed": 3})))
    tj = wait_phase(digits, "tj", "digits-pvc", NS, "Succeeded", timeout=600)
    assert tj["model"]["location"] == "pvc://digits-pvc-output/model"
    digits.kubectl("apply", "-n", NS, "-f", "-", input=model_deployment(
        "digits-pvc", trainingJobRef={"name": "digits-pvc"}))
    wait_phase(digits, "mdep", "digits-pvc", NS, "Ready", timeout=180)
    [endpoint] = ready_endpoints(digits, NS, "digits-pvc")
    test, classes = held_out(digits)
    assert right_answers(endpoint, test, classes) >= 16
    claims = get_json(digits, "pvc", "-n", NS)["items"]
    assert {c["metadata"]["name"] for c in claims} >= {"digits-data", "digits-pvc-output"}
    assert all(c["spec"]["accessModes"] == ["ReadWriteOnce"] for c in claims
               if c["metadata"]["name"] != "shared")
    digits.kubectl("delete", "mdep", "digits-pvc", "-n", NS, "--timeout=120s", timeout=150)


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
    # Its outputs go to the store: no output claim, and the checkpoints are kept in the store,
    # where the next attempt's pods (each with an empty output directory) found them.
    assert tj["latestCheckpoint"].startswith("s3://") and "/checkpoints/digits-ddp/" in tj["latestCheckpoint"]
    claims = {c["metadata"]["name"] for c in get_json(digits, "pvc", "-n", NS)["items"]}
    assert "digits-ddp-output" not in claims
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
    # A new, immutable version beside the old one, which is still served until the switch.
    v1 = status_of(digits, "tj", "digits-cnn", NS)["model"]["location"]
    # the same model name, a second version beside the first
    assert v2["model"]["location"] == f"s3://tauon/tauon/{NS}/models/digits/{after}/" != v1
    assert status_of(digits, "mdep", "digits", NS)["modelDigest"] == before
    old_manifest = obstore.head(digits.object_store.client(),
                                v1.removeprefix("s3://tauon/") + "manifest.json")

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
    kept = obstore.head(digits.object_store.client(), v1.removeprefix("s3://tauon/") + "manifest.json")
    assert kept["e_tag"] == old_manifest["e_tag"]  # the old version is untouched
