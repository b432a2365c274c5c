"""The artifact store's pure parts: URIs, keys, manifests (the S3 round trip is in
tests/integration/test_object_store.py, against a real SeaweedFS)."""

from __future__ import annotations

import pytest

from tauon_runtime.store import (
    MANIFEST,
    ChecksumMismatch,
    StoreConfig,
    StoreError,
    check_manifest,
    directory_files,
    manifest_for,
    model_key,
    parse_s3_uri,
)

SHA = "a" * 64


def test_s3_uri_names_bucket_and_key():
    loc = parse_s3_uri("s3://models/tauon/ns/models/digits/" + SHA + "/")
    assert (loc.bucket, loc.key) == ("models", f"tauon/ns/models/digits/{SHA}/")
    assert loc.uri == f"s3://models/tauon/ns/models/digits/{SHA}/"


@pytest.mark.parametrize("uri, words", [
    ("s3:///key", "names no bucket"),
    ("s3://bucket", "names no key"),
    ("s3://Bad_Bucket/k", "not a valid bucket name"),
    ("https://x/y", "not an s3:// URI"),
])
def test_bad_s3_uris_say_what_is_wrong(uri, words):
    with pytest.raises(ValueError, match=words):
        parse_s3_uri(uri)


def test_model_key_is_content_addressed_under_the_prefix():
    assert model_key("/tauon/", "team-a", "digits", SHA) == f"tauon/team-a/models/digits/{SHA}/"
    assert model_key("", "team-a", "digits", SHA) == f"team-a/models/digits/{SHA}/"
    with pytest.raises(ValueError, match="sha256"):
        model_key("tauon", "team-a", "digits", "abc")


def test_manifest_lists_every_file_with_its_digest_and_the_lineage(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.onnx").write_bytes(b"onnx")
    files = directory_files(tmp_path)
    assert list(files) == ["model.json", "model.safetensors", "sub/model.onnx"]
    assert files["model.safetensors"]["size"] == 7
    m = manifest_for(files, SHA, {"name": "digits", "datasetDigest": "d" * 64, "other": 1})
    assert m["sha256"] == SHA and m["name"] == "digits" and m["datasetDigest"] == "d" * 64
    assert "other" not in m
    check_manifest(m, SHA, "here")
    with pytest.raises(ChecksumMismatch, match="not " + "b" * 64):
        check_manifest(m, "b" * 64, "here")


def test_manifest_refuses_unsafe_paths_and_its_own_name():
    with pytest.raises(StoreError, match="unsafe path"):
        check_manifest({"version": 1, "sha256": SHA, "files": {"../x": {}}}, None, "here")
    with pytest.raises(ValueError, match=MANIFEST):
        manifest_for({MANIFEST: {}}, SHA, {})


def test_store_config_from_env():
    assert StoreConfig.from_env({}) is None
    cfg = StoreConfig.from_env({"TAUON_STORE_BUCKET": "b", "TAUON_STORE_ENDPOINT": "http://h:1",
                                "TAUON_STORE_PREFIX": "p"})
    assert cfg == StoreConfig(endpoint="http://h:1", bucket="b", prefix="p", region="us-east-1")
