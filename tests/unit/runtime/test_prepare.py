"""`tauon-runtime prepare`: every source, a deterministic digest, nothing half-written."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from tauon_runtime.config import PrepareConfig
from tauon_runtime.data import DataError, DataIntegrityError, prepare
from tauon_runtime.report import Reporter
from runtime_testlib import events, run_cli, write_config

QUIET = Reporter(enabled=False)


def _prepare(out: Path, source: dict, **extra) -> dict:
    return prepare(PrepareConfig.model_validate({"source": source, "outputDir": str(out), **extra}), QUIET)


def test_digits_layout_and_manifest(digits_dir: Path) -> None:
    manifest = json.loads((digits_dir / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 1439, "validation": 179, "test": 179}
    assert sum(manifest["counts"].values()) == 1797
    assert manifest["classes"] == [str(i) for i in range(10)] and manifest["numClasses"] == 10
    assert manifest["shape"] == [1, 8, 8]
    assert len(manifest["digest"]) == 64 and manifest["path"] == f"versions/{manifest['digest'][:16]}"
    assert manifest["splits"] == {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 0}
    assert manifest["source"] == {"builtin": {"name": "digits"}}
    version = digits_dir / manifest["path"]
    assert manifest["bytes"] == sum(f.stat().st_size for f in version.glob("*.safetensors"))
    train = load_file(str(version / "train.safetensors"))
    assert train["x"].dtype == np.uint8 and train["x"].shape == (1439, 1, 8, 8) and train["x"].max() == 255
    # stratified: every class is in every split
    for split in ("train", "validation", "test"):
        assert set(load_file(str(version / f"{split}.safetensors"))["y"].tolist()) == set(range(10))
    # the preprocessing the model card will carry: mean/std of the train split on [0, 1]
    assert manifest["preprocessing"]["mean"][0] == pytest.approx(train["x"].mean() / 255, abs=1e-5)


def test_preparing_twice_gives_the_same_digest(tmp_path: Path, digits_dir: Path) -> None:
    first = json.loads((digits_dir / "manifest.json").read_text())
    again = _prepare(tmp_path / "a", {"builtin": {"name": "digits"}})
    assert again["digest"] == first["digest"]
    twice = _prepare(tmp_path / "a", {"builtin": {"name": "digits"}})  # same directory: reused
    assert twice == again and len(list((tmp_path / "a" / "versions").iterdir())) == 1
    other_split = _prepare(tmp_path / "b", {"builtin": {"name": "digits"}}, splits={"train": 0.7, "validation": 0.15,
                                                                     "test": 0.15, "seed": 1})
    assert other_split["digest"] != first["digest"]


def test_synthetic_is_seeded(tmp_path: Path) -> None:
    src = {"synthetic": {"numSamples": 120, "numClasses": 4, "shape": [3, 6, 6], "seed": 7}}
    a, b = _prepare(tmp_path / "a", src), _prepare(tmp_path / "b", src)
    assert a["digest"] == b["digest"] and a["shape"] == [3, 6, 6] and a["numClasses"] == 4
    assert sum(a["counts"].values()) == 120
    c = _prepare(tmp_path / "c", {"synthetic": {**src["synthetic"], "seed": 8}})
    assert c["digest"] != a["digest"]


def _image_folder(root: Path, classes=("cat", "dog", "emu"), per_class=6, size=(10, 10), mode="L") -> Path:
    rng = np.random.default_rng(0)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = (rng.random((*size[::-1], 3)) * 60 + ci * 80).astype(np.uint8)
            Image.fromarray(arr, "RGB").convert(mode).save(root / name / f"{i}.png")
    return root


def test_pvc_imagefolder_with_resize(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "claim" / "pets", mode="RGB")
    m = _prepare(tmp_path / "out", {"pvc": {"claimName": "data", "path": "/pets"}},
                 sourceDir=str(tmp_path / "claim"), preprocessing={"resize": 4})
    assert m["classes"] == ["cat", "dog", "emu"] and m["shape"] == [3, 4, 4]
    assert sum(m["counts"].values()) == 18
    assert len(m["preprocessing"]["mean"]) == 3
    assert root.exists()  # the source is read, never moved


def test_pvc_csv_file(tmp_path: Path) -> None:
    lines = ["label," + ",".join(f"p{i}" for i in range(16))]
    for i in range(30):
        label = ["a", "b", "c"][i % 3]
        lines.append(label + "," + ",".join(str((i * 7 + j) % 256) for j in range(16)))
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    m = _prepare(tmp_path / "out", {"pvc": {"claimName": "data", "path": str(csv_path)}}, format="csv")
    assert m["shape"] == [1, 4, 4] and m["classes"] == ["a", "b", "c"] and m["dtype"] == "uint8"


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        _prepare(tmp_path / "out", {"pvc": {"claimName": "data", "path": str(tmp_path / "nope")}})
    assert not (tmp_path / "out").exists()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving files from a directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _tar_gz(src: Path, dest: Path) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(src, arcname="pets")
    dest.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_http_archive_verified_by_sha256(tmp_path: Path, http_root) -> None:
    url, www = http_root
    sha = _tar_gz(_image_folder(tmp_path / "pets"), www / "pets.tar.gz")
    m = _prepare(tmp_path / "out", {"http": {"url": f"{url}/pets.tar.gz", "sha256": sha}})
    assert m["classes"] == ["cat", "dog", "emu"] and m["shape"] == [1, 10, 10]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "versions"]

    # a zip of a CSV works the same way
    with zipfile.ZipFile(www / "rows.zip", "w") as zf:
        zf.writestr("data/rows.csv", "\n".join(f"{i % 2},{i},{i},{i},{i}" for i in range(20)))
    sha_zip = hashlib.sha256((www / "rows.zip").read_bytes()).hexdigest()
    m2 = _prepare(tmp_path / "out2", {"http": {"url": f"{url}/rows.zip", "sha256": sha_zip}})
    assert m2["shape"] == [1, 2, 2] and m2["classes"] == ["0", "1"]


def test_http_sha256_mismatch_errors_and_leaves_nothing(tmp_path: Path, http_root) -> None:
    url, www = http_root
    real = _tar_gz(_image_folder(tmp_path / "pets"), www / "pets.tar.gz")
    wrong = "0" * 64
    with pytest.raises(DataIntegrityError) as err:
        _prepare(tmp_path / "out", {"http": {"url": f"{url}/pets.tar.gz", "sha256": wrong}})
    assert f"expected {wrong}" in str(err.value) and f"got {real}" in str(err.value)
    assert not (tmp_path / "out").exists()

    # an existing, previously prepared output directory is left exactly as it was
    existing = tmp_path / "kept"
    _prepare(existing, {"synthetic": {"numSamples": 20, "numClasses": 2}})
    before = sorted(str(p.relative_to(existing)) for p in existing.rglob("*"))
    with pytest.raises(DataIntegrityError):
        _prepare(existing, {"http": {"url": f"{url}/pets.tar.gz", "sha256": wrong}})
    assert sorted(str(p.relative_to(existing)) for p in existing.rglob("*")) == before


def test_cli_prepare_reports_and_exits_nonzero_on_bad_sha(tmp_path: Path, http_root) -> None:
    url, www = http_root
    _tar_gz(_image_folder(tmp_path / "pets"), www / "pets.tar.gz")
    cfg = write_config(tmp_path / "c.json", {
        "source": {"http": {"url": f"{url}/pets.tar.gz", "sha256": "f" * 64}}, "outputDir": str(tmp_path / "o")})
    term = tmp_path / "termination-log"
    proc = run_cli(["prepare", "--config", str(cfg)], env={"TAUON_TERMINATION_LOG": str(term)})
    assert proc.returncode == 1, proc.stderr
    assert "sha256 mismatch" in proc.stderr
    assert json.loads(term.read_text())["error"] == "DataIntegrityError"
    assert not (tmp_path / "o").exists()

    cfg_ok = write_config(tmp_path / "ok.json", {"source": {"builtin": {"name": "digits"}}, "outputDir": str(tmp_path / "d")})
    proc = run_cli(["prepare", "--config", str(cfg_ok)])
    assert proc.returncode == 0, proc.stderr
    assert events(proc.stdout)[-1]["event"] == "finished" and events(proc.stdout)[-1]["counts"]["test"] == 179
