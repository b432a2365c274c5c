"""The artifact store against a real S3 server (SeaweedFS on loopback): publish, fetch and
verify a model version; a tampered object, a half-finished upload, wrong credentials and an
unreachable endpoint each fail the way a user reads them."""

from __future__ import annotations

import hashlib
import json
import time

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
