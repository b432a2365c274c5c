"""The artifact store against a real S3 server (SeaweedFS on loopback): publish, fetch and
verify a model version; a tampered object, a half-finished upload, wrong credentials and an
unreachable endpoint each fail the way a user reads them."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import obstore
import pytest

from localkube.objectstore import ObjectStore
from tauon_runtime.store import (
    MANIFEST,
    ArtifactStore,
    ChecksumMismatch,
    NotPublished,
    StoreConfig,
    StoreError,
    model_key,
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    store = ObjectStore.start(tmp_path_factory.mktemp("s3"))
    yield store
    store.stop()


@pytest.fixture
def artifacts(s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    return ArtifactStore(StoreConfig(endpoint=s3.endpoint, bucket=s3.bucket, region=s3.region))


def exported(tmp_path, weights: bytes = b"weights-v1"):
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(weights)
    sha = hashlib.sha256(weights).hexdigest()
    (d / "model.json").write_text(json.dumps({"sha256": sha, "name": "digits"}))
    return d, sha


def test_publish_then_fetch_verifies_every_file(artifacts, s3, tmp_path):
    d, sha = exported(tmp_path)
    key = model_key("tauon", "team-a", "digits", sha)
    uri = artifacts.publish(d, key, sha, {"name": "digits", "datasetDigest": "d" * 64})
    assert uri == f"s3://{s3.bucket}/tauon/team-a/models/digits/{sha}/"
    names = sorted(o["path"] for batch in obstore.list(s3.client(), key) for o in batch)
    assert names == [key + n for n in (MANIFEST, "model.json", "model.safetensors")]
    manifest = artifacts.fetch(key, tmp_path / "fetched", sha)
    assert manifest["datasetDigest"] == "d" * 64
    assert (tmp_path / "fetched" / "model.safetensors").read_bytes() == b"weights-v1"
    # Publishing the same version again changes nothing (immutable keys).
    before = obstore.head(s3.client(), key + MANIFEST)["last_modified"]
    time.sleep(1.1)
    artifacts.publish(d, key, sha, {})
    assert obstore.head(s3.client(), key + MANIFEST)["last_modified"] == before


def test_a_tampered_object_is_refused_and_nothing_is_written(artifacts, s3, tmp_path):
    d, sha = exported(tmp_path, b"weights-tamper")
    key = model_key("tauon", "team-a", "tampered", sha)
    artifacts.publish(d, key, sha, {})
    obstore.put(s3.client(), key + "model.safetensors", b"evil weights")
    with pytest.raises(ChecksumMismatch, match="model.safetensors: sha256 .* does not match"):
        artifacts.fetch(key, tmp_path / "out", sha)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ChecksumMismatch, match="not " + "b" * 64):
        artifacts.fetch(key, tmp_path / "out", "b" * 64)


def test_an_unfinished_upload_is_not_a_published_model(artifacts, s3, tmp_path):
    d, sha = exported(tmp_path, b"weights-half")
    key = model_key("tauon", "team-a", "half", sha)
    obstore.put(s3.client(), key + "model.safetensors", b"weights-half")  # killed here
    with pytest.raises(NotPublished, match="no manifest.json"):
        artifacts.fetch(key, tmp_path / "out", sha)
    artifacts.publish(d, key, sha, {})  # the retry publishes exactly this version
    assert artifacts.fetch(key, tmp_path / "out", sha)["sha256"] == sha


def test_wrong_credentials_and_unreachable_endpoint_fail_fast_and_clearly(s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    bad = ArtifactStore(StoreConfig(endpoint=s3.endpoint, bucket=s3.bucket))
    with pytest.raises(StoreError, match=f"at {s3.endpoint} .*privileges|403"):
        bad.fetch("tauon/x/", s3.state_dir / "out", None)
    t0 = time.monotonic()
    gone = ArtifactStore(StoreConfig(endpoint="http://127.0.0.1:9", bucket=s3.bucket),
                         timeout_s=3)
    with pytest.raises(StoreError, match="127.0.0.1:9"):
        gone.fetch("tauon/x/", s3.state_dir / "out", None)
    assert time.monotonic() - t0 < 15


# --- the storage initializer (`tauon-runtime fetch`) as a serving pod runs it ------------------

def fetch_cli(tmp_path, env: dict, uri: str, sha: str) -> tuple[int, dict, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "termination-log"
    dest = tmp_path / "models" / "model"
    run = subprocess.run(
        [sys.executable, "-m", "tauon_runtime", "fetch", "--uri", uri, "--sha256", sha,
         "--dest", str(dest)],
        env={**os.environ, "TAUON_TERMINATION_LOG": str(log), **env},
        capture_output=True, text=True, timeout=120)
    return run.returncode, json.loads(log.read_text()) if log.exists() else {}, dest


def store_env(s3, endpoint: str | None = None) -> dict:
    return {"TAUON_STORE_ENDPOINT": endpoint or s3.endpoint, "TAUON_STORE_BUCKET": s3.bucket,
            "TAUON_STORE_REGION": s3.region, "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key}


def test_the_storage_initializer_fetches_verifies_and_says_why_it_refuses(artifacts, s3, tmp_path):
    d, sha = exported(tmp_path, b"weights-init")
    uri = artifacts.publish(d, model_key("tauon", "team-b", "init", sha), sha, {})
    code, result, dest = fetch_cli(tmp_path / "ok", store_env(s3), uri, sha)
    assert (code, result["result"]) == (0, "succeeded")
    assert (dest / "model.safetensors").read_bytes() == b"weights-init"
    # Another digest than the published one: permanent (exit 3), with the reason for status.
    code, result, dest = fetch_cli(tmp_path / "other", store_env(s3), uri, "c" * 64)
    assert (code, result["error"]) == (3, "ChecksumMismatch") and not dest.exists()
    # Nothing published at the key.
    code, result, _ = fetch_cli(tmp_path / "none", store_env(s3), uri.replace("/init/", "/nope/"), sha)
    assert (code, result["error"]) == (3, "ModelNotPublished")
    # A wrong endpoint: retryable (exit 1), StoreUnavailable naming the endpoint, within seconds.
    t0 = time.monotonic()
    code, result, _ = fetch_cli(tmp_path / "gone", store_env(s3, "http://127.0.0.1:9"), uri, sha)
    assert (code, result["error"]) == (1, "StoreUnavailable")
    assert "127.0.0.1:9" in result["message"] and time.monotonic() - t0 < 60


def test_an_https_model_is_fetched_from_the_same_layout(tmp_path):
    """A version served over HTTP(S) (a bucket's web endpoint, any web server) as published."""
    d, sha = exported(tmp_path, b"weights-http")
    site = tmp_path / "site" / "digits" / "v1"
    site.mkdir(parents=True)
    files = {}
    for f in d.iterdir():
        (site / f.name).write_bytes(f.read_bytes())
        files[f.name] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "size": f.stat().st_size}
    (site / MANIFEST).write_text(json.dumps({"version": 1, "sha256": sha, "files": files}))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/digits/v1/"
        code, result, dest = fetch_cli(tmp_path / "ok", {}, base, sha)
        assert code == 0, result
        assert (dest / "model.safetensors").read_bytes() == b"weights-http"
        (site / "model.safetensors").write_bytes(b"tampered on the web server")
        code, result, dest = fetch_cli(tmp_path / "bad", {}, base, sha)
        assert (code, result["error"]) == (3, "ChecksumMismatch") and not dest.exists()
    finally:
        server.shutdown()


PUBLISH = """
import sys
from pathlib import Path
from tauon_runtime.store import ArtifactStore, StoreConfig
cfg = StoreConfig.from_env()
print(ArtifactStore(cfg).publish(Path(sys.argv[1]), sys.argv[2], sys.argv[3], {}), flush=True)
"""


def test_a_publisher_killed_during_the_upload_leaves_no_model_and_the_retry_publishes_one(
        artifacts, s3, tmp_path):
    """What a training pod killed while uploading leaves: objects, but no manifest, so no
    version; the next attempt publishes exactly one."""
    d = tmp_path / "model"
    d.mkdir()
    weights = os.urandom(48 << 20)  # big enough to be killed half-way
    (d / "model.safetensors").write_bytes(weights)
    (d / "model.json").write_text("{}")  # uploaded first (files go in name order)
    sha = hashlib.sha256(weights).hexdigest()
    key = model_key("tauon", "team-a", "killed", sha)
    env = {**os.environ, **store_env(s3)}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISH, str(d), key, sha], env=env,
                            stdout=subprocess.PIPE, text=True)
    client = s3.client()
    deadline = time.monotonic() + 60
    while not any(o["path"] == key + "model.json" for b in obstore.list(client, key) for o in b):
        assert proc.poll() is None, "the upload finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    listed = [o["path"] for b in obstore.list(client, key) for o in b]
    assert key + MANIFEST not in listed, listed
    with pytest.raises(NotPublished):
        artifacts.fetch(key, tmp_path / "out", sha)
    retry = subprocess.run([sys.executable, "-c", PUBLISH, str(d), key, sha], env=env,
                           capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stderr
    versions = {o["path"] for b in obstore.list(client, "tauon/team-a/models/killed/") for o in b
                if o["path"].endswith(MANIFEST)}
    assert versions == {key + MANIFEST}
    assert artifacts.fetch(key, tmp_path / "out", sha)["sha256"] == sha
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == weights


# --- a Dataset whose source is an object in the store -------------------------------------------

def test_a_dataset_is_prepared_from_an_s3_object_and_a_changed_one_is_refused(s3, tmp_path, monkeypatch):
    from sklearn.datasets import load_wine

    from tauon_runtime.contract import PrepareConfig
    from tauon_runtime.data.prepare import prepare
    from tauon_runtime.data.sources import DataIntegrityError

    wine = load_wine()
    rows = [",".join([*wine.feature_names, "target"])]
    rows += [",".join([*(f"{v:g}" for v in x), str(y)]) for x, y in zip(wine.data, wine.target)]
    csv = ("\n".join(rows) + "\n").encode()
    obstore.put(s3.client(), "datasets/wine/wine.csv", csv)
    for k, v in store_env(s3).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TAUON_STORE_BUCKET")  # the object's bucket is the source's, no publishing
    source = {"bucket": s3.bucket, "key": "datasets/wine/wine.csv",
              "sha256": hashlib.sha256(csv).hexdigest()}

    def config(src: dict) -> PrepareConfig:
        return PrepareConfig.model_validate({
            "task": "tabular-classification", "columns": {"label": "target"},
            "source": {"s3": src}, "outputDir": str(tmp_path / "out")})

    manifest = prepare(config(source))
    assert manifest["counts"]["train"] + manifest["counts"]["validation"] + manifest["counts"]["test"] == 178
    assert manifest["source"]["s3"]["key"] == "datasets/wine/wine.csv"
    with pytest.raises(DataIntegrityError, match="sha256 mismatch for s3://"):
        prepare(config({**source, "sha256": "0" * 64}))
    with pytest.raises(Exception, match="no such object"):
        prepare(config({**source, "key": "datasets/nope.csv"}))


def test_checkpoints_kept_in_the_store_resume_a_worker_that_starts_empty(artifacts, s3, tmp_path):
    """A run's checkpoints with its outputs in the store: each save is uploaded, keepLast holds
    there too, and a new pod (an empty output directory) resumes from the latest stored one."""
    import torch

    from tauon_runtime.store import checkpoints_key
    from tauon_runtime.train.checkpoint import Checkpointer, StoredCheckpoints

    key = checkpoints_key("tauon", "team-a", "resnet", "uid-1")
    assert key == "tauon/team-a/checkpoints/resnet/uid-1/"
    first = Checkpointer(tmp_path / "pod-a", keep_last=2, stored=StoredCheckpoints(artifacts, key))
    for step in (10, 20, 30):
        first.save({"weights": torch.full((3,), float(step)), "state": {"step": step}}, step)
    assert first.location == f"s3://{s3.bucket}/{key}step-00000030.pt"
    stored = sorted(o["path"] for batch in obstore.list(s3.client(), key) for o in batch)
    assert stored == [key + "step-00000020.pt", key + "step-00000030.pt"]

    second = Checkpointer(tmp_path / "pod-b", keep_last=2, stored=StoredCheckpoints(artifacts, key))
    latest = second.latest()
    assert latest == tmp_path / "pod-b" / "step-00000030.pt"
    saved = second.load(latest)
    assert saved["state"] == {"step": 30} and saved["weights"].tolist() == [30.0, 30.0, 30.0]
    # Another run (another uid) of the same name finds nothing to resume.
    other = StoredCheckpoints(artifacts, checkpoints_key("tauon", "team-a", "resnet", "uid-2"))
    assert Checkpointer(tmp_path / "pod-c", keep_last=2, stored=other).latest() is None
