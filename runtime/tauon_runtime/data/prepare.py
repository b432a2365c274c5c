"""`tauon-runtime prepare`: a Dataset's source -> a versioned, verified layout on disk.

    <outputDir>/
      manifest.json                 points at the current version (written last, atomically)
      versions/<digest[:16]>/
        train.safetensors           x: [N, C, H, W] uint8 (or float32) on a 0..255 scale, y: int64
        validation.safetensors
        test.safetensors
        manifest.json

A version directory is built under a temporary name and renamed into place, so a failure (a
sha256 mismatch, unreadable data) leaves nothing behind. The digest covers the content only, so
preparing the same source twice gives the same digest and the same directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from tauon_runtime.contract import PrepareConfig, Splits
from tauon_runtime.data import sources
from tauon_runtime.data.sources import DataError, RawData
from tauon_runtime.report import Reporter

SPLITS = ("train", "validation", "test")
LAYOUT_VERSION = 1


def stratified_split(y: np.ndarray, splits: Splits) -> dict[str, np.ndarray]:
    """Indices per split; every class is divided in the same proportions (seeded)."""
    rng = np.random.default_rng(splits.seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * splits.test)
        n_val = round(len(idx) * splits.validation)
        parts["test"].append(idx[:n_test])
        parts["validation"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the inputs after scaling to [0, 1]."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), 1024):  # in chunks: a float64 copy of all images may not fit
        part = x[start : start + 1024].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    std = np.maximum(std, 1e-6)  # a constant channel must not divide by 0
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def content_digest(arrays: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> str:
    h = hashlib.sha256(f"tauon-dataset-v{LAYOUT_VERSION}\n".encode())
    h.update(json.dumps(meta, sort_keys=True).encode())
    for split in SPLITS:
        for key in ("x", "y"):
            a = np.ascontiguousarray(arrays[split][key])
            h.update(f"{split}/{key}:{a.dtype.str}:{list(a.shape)}\n".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_raw(cfg: PrepareConfig, work: Path) -> RawData:
    src = cfg.source
    side = cfg.preprocessing.resize
    if src.builtin is not None:
        return sources.builtin_digits()
    if src.synthetic is not None:
        return sources.synthetic(src.synthetic)
    if src.http is not None:
        name = src.http.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "download"
        archive = sources.download_verified(src.http, work / name)
        return sources.load_path(archive, cfg.format, work, side)
    assert src.pvc is not None
    path = Path(src.pvc.path)
    if cfg.source_dir:  # in a pod the claim is mounted at source_dir; path is inside the claim
        path = Path(cfg.source_dir) / src.pvc.path.lstrip("/")
    return sources.load_path(path, cfg.format, work, side)


def prepare(cfg: PrepareConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Prepare the data set described by `cfg`; return the manifest."""
    reporter = reporter or Reporter()
    out = Path(cfg.output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    reporter.event("start", command="prepare", source=cfg.source.kind)
    work = Path(tempfile.mkdtemp(prefix=".tmp-prepare-", dir=out))
    try:
        raw = load_raw(cfg, work)
        manifest = _write_version(cfg, raw, out, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:  # leave no trace of a failed first prepare
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    reporter.event(
        "finished",
        command="prepare",
        result="succeeded",
        **{
            k: manifest[k]
            for k in ("digest", "counts", "classes", "numClasses", "shape", "bytes", "path")
        },
    )
    return manifest


def _write_version(cfg: PrepareConfig, raw: RawData, out: Path, work: Path) -> dict[str, Any]:
    if len(raw.classes) < 2:
        raise DataError(f"need at least two classes, found {len(raw.classes)}")
    x = sources.resize(raw.x, cfg.preprocessing.resize) if cfg.preprocessing.resize else raw.x
    index = stratified_split(raw.y, cfg.splits)
    arrays = {s: {"x": np.ascontiguousarray(x[i]), "y": raw.y[i]} for s, i in index.items()}
    if cfg.preprocessing.normalize:
        mean, std = channel_stats(arrays["train"]["x"])
    else:
        mean, std = [0.0] * x.shape[1], [1.0] * x.shape[1]
    preprocessing = {
        "resize": cfg.preprocessing.resize,
        "normalize": cfg.preprocessing.normalize,
        "scale": 255.0,  # inputs are divided by this, then normalized with mean/std
        "mean": mean,
        "std": std,
    }
    digest = content_digest(arrays, {"classes": raw.classes, "preprocessing": preprocessing})
    rel = f"versions/{digest[:16]}"
    stage = work / "version"
    stage.mkdir()
    for split, tensors in arrays.items():
        save_file(tensors, str(stage / f"{split}.safetensors"))
    manifest = {
        "layoutVersion": LAYOUT_VERSION,
        "digest": digest,
        "path": rel,
        "counts": {s: len(index[s]) for s in SPLITS},
        "classes": raw.classes,
        "numClasses": len(raw.classes),
        "shape": [int(d) for d in x.shape[1:]],
        "dtype": str(x.dtype),
        "bytes": sum((stage / f"{s}.safetensors").stat().st_size for s in SPLITS),
        "preprocessing": preprocessing,
        "splits": cfg.splits.model_dump(by_alias=True),
        "source": cfg.source.model_dump(by_alias=True, exclude_none=True),
    }
    write_json_atomic(stage / "manifest.json", manifest)
    final = out / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():  # same digest, same bytes: an existing version is already right
        os.rename(stage, final)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def status_patch(event: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """What the Dataset's status learns from a prepare event."""
    if event != "finished":
        return None
    return {
        "status": {k: fields[k] for k in ("digest", "counts", "classes", "bytes") if k in fields}
    }
