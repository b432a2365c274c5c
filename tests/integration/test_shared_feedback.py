"""Feedback shared by every replica through the artifact store (a real SeaweedFS on loopback):
two real `tauon-runtime serve` processes of one deployment, a prediction made by one and its
feedback sent to the other, a replica restarted, bad feedback refused with nothing stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import obstore
import pytest
import torch

from kubetest import post_json
from localkube.objectstore import ObjectStore
from localkube.procutil import free_port, wait_for_url
from tauon_runtime.models import build_model, export_model
from tauon_runtime.contract.keys import feedback_key

pytestmark = pytest.mark.timeout(240)

KEY = feedback_key("tauon", "team-a", "digits")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    store = ObjectStore.start(tmp_path_factory.mktemp("s3"))
    yield store
    store.stop()


def exported(tmp_path_factory, seed: int) -> Path:
    torch.manual_seed(seed)
    out = tmp_path_factory.mktemp("export") / "model"
    export_model(build_model("cnn", 10, 1, 8), out, {
        "name": "digits", "architecture": "cnn", "modelOptions": {}, "numClasses": 10,
        "classes": [str(i) for i in range(10)], "inputShape": [1, 8, 8],
        "preprocessing": {"scale": 255.0, "mean": [0.5], "std": [0.25]}, "metrics": {},
        "datasetDigest": "d" * 64,
    })
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return exported(tmp_path_factory, 0)


@pytest.fixture(scope="module")
def canary_model_dir(tmp_path_factory) -> Path:
    """Another model version (other weights, other digest): a canary beside the stable one."""
    return exported(tmp_path_factory, 1)


class Replica:
    """One serving process of the deployment."""

    def __init__(self, s3: ObjectStore, model_dir: Path, workdir: Path, key: str = KEY) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cfg = workdir / f"serve-{self.port}.json"
        cfg.write_text(json.dumps({
            "modelName": "digits", "modelDir": str(model_dir), "device": "cpu",
            "host": "127.0.0.1", "port": self.port, "drainSeconds": 0,
            "feedback": {"enabled": True, "retentionDays": 7}, "feedbackKey": key,
        }))
        env = os.environ | {
            "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "TAUON_STORE_ENDPOINT": s3.endpoint, "TAUON_STORE_BUCKET": s3.bucket,
            "TAUON_STORE_REGION": s3.region, "TAUON_STORE_PREFIX": "tauon",
        }
        self.log = workdir / f"serve-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tauon_runtime", "serve", "--config", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_url(f"{self.base}/v2/health/ready", 90, proc=self.proc)
        except (ChildProcessError, TimeoutError):
            pytest.fail(self.log.read_text()[-3000:])

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        return post_json(self.base + path, body)

    def predict(self, n: int = 1) -> list[dict]:
        x = np.random.default_rng(n).integers(0, 256, (n, 1, 8, 8)).tolist()
        status, body = self.post("/v1/predict", {"instances": x})
        assert status == 200, body
        return body["predictions"]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base + "/v1/feedback/stats", timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=60) == 0, self.log.read_text()[-3000:]


def records_under(s3: ObjectStore, key: str) -> list[dict]:
    keys = sorted(o["path"] for batch in obstore.list(s3.client(), key + "/records/") for o in batch)
    return [json.loads(bytes(obstore.get(s3.client(), k).bytes())) for k in keys]


def records(s3: ObjectStore) -> list[dict]:
    return records_under(s3, KEY)


def test_feedback_joins_a_prediction_made_by_another_replica_and_survives_a_restart(
        s3, model_dir, tmp_path):
    a, b = Replica(s3, model_dir, tmp_path), Replica(s3, model_dir, tmp_path)
    try:
        [pred] = a.predict()
        wrong = next(str(k) for k in range(10) if str(k) != pred["label"])
        # B never saw the prediction: it reads A's segment from the store (flushed within 1 s).
        status, body = b.post("/v1/feedback", {"predictionId": pred["predictionId"], "label": wrong})
        assert (status, body["correct"]) == (201, False), body
        status, body = a.post("/v1/feedback", {"predictionId": pred["predictionId"], "label": pred["label"]})
        assert (status, body["correct"]) == (201, True), body
        [first, second] = sorted(records(s3), key=lambda r: r["timestamp"])
        assert first["predictedLabel"] == pred["label"] and first["trueLabel"] == wrong
        assert first["input"]["shape"] == [1, 8, 8] and len(first["input"]["data"][0]) == 8
        assert first["modelDigest"] == second["modelDigest"] and len(first["modelDigest"]) == 64
        for replica in (a, b):  # every replica counts every replica's records
            st = replica.stats()
            assert (st["total"], st["correct"], st["incorrect"]) == (2, 1, 1)
            assert st["accuracy"] == 0.5 and st["byTrueLabel"] == {wrong: 1, pred["label"]: 1}
            assert st["byModelDigest"] == {
                first["modelDigest"][:12]: {"correct": 1, "incorrect": 1, "accuracy": 0.5}}

        # A prediction made just before SIGTERM is flushed on the way out; A's successor (a new
        # process, a new replica token) and B both join feedback to it.
        [late] = a.predict()
        a.stop()
        a2 = Replica(s3, model_dir, tmp_path)
        try:
            status, body = a2.post("/v1/feedback", {"predictionId": late["predictionId"], "score": 0.25})
            assert (status, body["correct"]) == (201, None), body
            assert a2.stats()["scoreOnly"] == 1
        finally:
            a2.stop()
    finally:
        a.stop()
        b.stop()


def test_feedback_is_the_predicting_models_whichever_replica_receives_it(
        s3, model_dir, canary_model_dir, tmp_path):
    key = f"{KEY}-tracks"
    stable, canary = Replica(s3, model_dir, tmp_path, key), Replica(s3, canary_model_dir, tmp_path, key)
    try:
        x = {"instances": [[[[0] * 8] * 8]]}
        stable_digest = stable.post("/v1/predict", x)[1]["modelDigest"]
        status, answer = canary.post("/v1/predict", x)
        assert status == 200 and answer["modelDigest"] != stable_digest
        [pred] = answer["predictions"]
        # users send feedback through the Service, to the stable server
        status, body = stable.post("/v1/feedback", {"predictionId": pred["predictionId"],
                                                    "label": pred["label"]})
        assert status == 201, body
        [record] = records_under(s3, key)
        assert record["modelDigest"] == answer["modelDigest"]  # the canary's, not the receiver's
        by_model = stable.stats()["byModelDigest"]
        assert by_model == {record["modelDigest"][:12]: {"correct": 1, "incorrect": 0, "accuracy": 1.0}}
        assert canary.stats()["byModelDigest"] == by_model
    finally:
        stable.stop()
        canary.stop()


def test_bad_feedback_is_refused_and_stores_nothing(s3, model_dir, tmp_path):
    r = Replica(s3, model_dir, tmp_path)
    try:
        [pred] = r.predict()
        before = r.stats()["total"]
        well_formed_unknown = pred["predictionId"].rsplit("-", 1)[0] + "-" + "0" * 16
        for body, status, words in [
            ({"predictionId": well_formed_unknown, "label": "3"}, 404, "unknown prediction id"),
            ({"predictionId": "not-an-id", "label": "3"}, 404, "unknown prediction id"),
            ({"predictionId": pred["predictionId"], "label": "eleven"}, 400, "not one of the model's classes"),
            ({"predictionId": pred["predictionId"]}, 400, "send the true 'label'"),
            ({"predictionId": "x" * 200, "label": "3"}, 400, "predictionId"),
        ]:
            got, answer = r.post("/v1/feedback", body)
            assert got == status and words in json.dumps(answer), (body, got, answer)
        assert r.stats()["total"] == before
    finally:
        r.stop()


def test_a_dataset_from_feedback_adds_it_to_the_base_and_keeps_the_base_test_split(
        s3, model_dir, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    from tauon_runtime.config import PrepareConfig
    from tauon_runtime.data import prepare
    from tauon_runtime.report import Reporter

    for k, v in {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                 "TAUON_STORE_ENDPOINT": s3.endpoint, "TAUON_STORE_BUCKET": s3.bucket,
                 "TAUON_STORE_REGION": s3.region, "TAUON_STORE_PREFIX": "tauon",
                 "TAUON_NAMESPACE": "team-a",
                 "TAUON_STATUS_TARGET": "tauon.dev/v1alpha1/namespaces/team-a/datasets/digits"}.items():
        monkeypatch.setenv(k, v)
    base = prepare(PrepareConfig.model_validate({
        "source": {"builtin": {"name": "digits"}}, "outputDir": str(tmp_path / "base")}),
        Reporter(enabled=False))
    base_dir = tmp_path / "base" / base["path"]
    base_test = load_file(str(base_dir / "test.safetensors"))

    # Real feedback: two new inputs (one relabelled later), one input from the base's test
    # split (must not leak into training), one score-only record.
    key = feedback_key("tauon", "team-a", "digits-retrain")  # this test's own deployment
    r = Replica(s3, model_dir, tmp_path, key)
    try:
        fresh = np.random.default_rng(7).integers(0, 256, (2, 1, 8, 8)).tolist()
        leaked = base_test["x"][0].tolist()
        status, body = r.post("/v1/predict", {"instances": [*fresh, leaked]})
        assert status == 200, body
        a, b, c = body["predictions"]
        for pid, label in ((a["predictionId"], "1"), (b["predictionId"], "2"),
                           (a["predictionId"], "7"), (c["predictionId"], "3")):
            assert r.post("/v1/feedback", {"predictionId": pid, "label": label})[0] == 201
        assert r.post("/v1/feedback", {"predictionId": b["predictionId"], "score": 1.0})[0] == 201
    finally:
        r.stop()

    monkeypatch.setenv("TAUON_STATUS_TARGET", "tauon.dev/v1alpha1/namespaces/team-a/datasets/digits-fb")
    out = tmp_path / "fb"
    fb = prepare(PrepareConfig.model_validate({
        "source": {"feedback": {"modelDeploymentRef": {"name": "digits-retrain"},
                                "baseDatasetRef": {"name": "digits"}}},
        "outputDir": str(out), "baseLocation": base["location"], "baseDigest": base["digest"],
        "feedbackKey": key}), Reporter(enabled=False))
    assert fb["digest"] != base["digest"]
    assert fb["feedback"] == {
        "baseDataset": "digits", "baseDigest": base["digest"], "modelDeployment": "digits-retrain",
        "records": 5, "added": 2, "relabelled": 1, "skipped": {"inBase": 1, "noLabel": 1}}
    assert fb["counts"] == {**base["counts"], "train": base["counts"]["train"] + 2}
    version = out / fb["path"]
    for split in ("validation", "test"):  # byte for byte the base's
        assert (version / f"{split}.safetensors").read_bytes() == (base_dir / f"{split}.safetensors").read_bytes()
    train = load_file(str(version / "train.safetensors"))
    added = dict(zip(map(bytes, train["x"][-2:]), train["y"][-2:].tolist(), strict=True))
    assert added == {bytes(np.asarray(fresh[0], np.uint8)): 7, bytes(np.asarray(fresh[1], np.uint8)): 2}
    assert fb["preprocessing"] == base["preprocessing"] and fb["location"].startswith(
        f"s3://{s3.bucket}/tauon/team-a/datasets/digits-fb/")


def test_two_replicas_appending_at_once_keep_every_record_and_a_killed_one_loses_none(
        s3, model_dir, tmp_path):
    import concurrent.futures

    key = feedback_key("tauon", "team-a", "digits-concurrent")
    a, b = Replica(s3, model_dir, tmp_path, key), Replica(s3, model_dir, tmp_path, key)
    try:
        preds = a.predict(40) + b.predict(40)

        def send(i_pred):
            i, pred = i_pred
            replica = (a, b)[i % 2]  # half of each replica's predictions go to the other one
            return replica.post("/v1/feedback", {"predictionId": pred["predictionId"], "label": str(i % 10)})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, enumerate(preds)))
        assert [s for s, _ in answers] == [201] * 80, answers[:3]
        # SIGKILL: no shutdown, no last flush. Every acknowledged record is already stored.
        a.proc.kill()
        a.proc.wait()
        stored = records_under(s3, key)
        assert len(stored) == 80 and {r["predictionId"] for r in stored} == {p["predictionId"] for p in preds}
        assert all(r["input"]["shape"] == [1, 8, 8] and r["trueLabel"] is not None for r in stored)
        assert b.stats()["total"] == 80
    finally:
        a.stop()
        b.stop()
