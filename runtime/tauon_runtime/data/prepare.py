"""`tauon-runtime prepare`: a Dataset's source -> a versioned, verified layout on disk.

    <outputDir>/
      manifest.json                 points at the current version (written last, atomically)
      versions/<digest[:16]>/
        train.safetensors           x: [N, C, H, W] as the task lays it out (images: uint8 or
                                    float32 on a 0..255 scale; tabular: float32 [N, F, 1, 1]),
                                    y: int64
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

from tauon_runtime import tasks
from tauon_runtime.contract import PrepareConfig, Splits
from tauon_runtime.data.feedback import from_feedback
from tauon_runtime.data.preview import preview
from tauon_runtime.data.sources import DataError, RawData
from tauon_runtime.report import Reporter
from tauon_runtime.store import ArtifactStore, StoreConfig, dataset_key, owner_from_env

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


def prepare(cfg: PrepareConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Prepare the data set described by `cfg`; return the manifest."""
    reporter = reporter or Reporter()
    out = Path(cfg.output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    reporter.event("start", command="prepare", source=cfg.source.kind)
    work = Path(tempfile.mkdtemp(prefix=".tmp-prepare-", dir=out))
    try:
        if cfg.source.feedback is not None:
            arrays, meta, extra = from_feedback(cfg, work)
        else:
            arrays, meta, extra = _split(cfg, tasks.get(cfg.task).load_raw(cfg, work))
        manifest = write_version(cfg, arrays, meta, extra, out, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:  # leave no trace of a failed first prepare
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    if (store := StoreConfig.from_env()) is not None:
        manifest = {
            **manifest,
            "location": publish_version(store, out / manifest["path"], manifest),
        }
    samples = preview(cfg.task, arrays["train"]["x"], arrays["train"]["y"], {**meta, **extra})
    reporter.event(
        "finished",
        command="prepare",
        result="succeeded",
        **{k: manifest[k] for k in FINISHED_FIELDS if k in manifest},
        preview=samples,
    )
    return manifest


FINISHED_FIELDS = (
    "digest",
    "counts",
    "classes",
    "numClasses",
    "shape",
    "bytes",
    "path",
    "location",
)


def publish_version(store: StoreConfig, version_dir: Path, manifest: dict[str, Any]) -> str:
    """The prepared version, also in the artifact store under its content digest (immutable,
    the store's manifest last): any cluster can train from it. Returns its s3:// URI."""
    namespace, name = owner_from_env()
    key = dataset_key(store.prefix, namespace, name or "dataset", manifest["digest"])
    card = {"name": name, "task": manifest["task"], "datasetDigest": manifest["digest"]}
    return ArtifactStore(store).publish(
        version_dir, key, manifest["digest"].removeprefix("sha256:"), card, under="version"
    )


Arrays = dict[str, dict[str, np.ndarray]]  # split -> {"x": ..., "y": ...}


def _split(cfg: PrepareConfig, raw: RawData) -> tuple[Arrays, dict[str, Any], dict[str, Any]]:
    """A source's samples -> (the splits, what the digest covers, the task's manifest extras)."""
    if len(raw.classes) < 2:
        raise DataError(f"need at least two classes, found {len(raw.classes)}")
    index = stratified_split(raw.y, cfg.splits)
    xs, preprocessing, extra = tasks.get(cfg.task).prepare(cfg, raw, index)
    arrays = {s: {"x": xs[s], "y": raw.y[i]} for s, i in index.items()}
    meta: dict[str, Any] = {"classes": raw.classes, "preprocessing": preprocessing, **extra}
    if cfg.task != "image-classification":  # image digests stay what they were
        meta["task"] = cfg.task
    return arrays, meta, extra


def write_version(
    cfg: PrepareConfig,
    arrays: Arrays,
    meta: dict[str, Any],
    extra: dict[str, Any],
    out: Path,
    work: Path,
) -> dict[str, Any]:
    """Write the splits as a version named by their digest (staged, then renamed into place)
    and point the manifest at it."""
    x = arrays["train"]["x"]
    preprocessing = meta["preprocessing"]
    digest = content_digest(arrays, meta)
    rel = f"versions/{digest[:16]}"
    stage = work / "version"
    stage.mkdir()
    for split, tensors in arrays.items():
        save_file(tensors, str(stage / f"{split}.safetensors"))
    manifest = {
        "layoutVersion": LAYOUT_VERSION,
        "task": cfg.task,
        "digest": digest,
        "path": rel,
        "counts": {s: len(arrays[s]["y"]) for s in SPLITS},
        "classes": meta["classes"],
        "numClasses": len(meta["classes"]),
        "shape": [int(d) for d in x.shape[1:]],
        "dtype": str(x.dtype),
        "bytes": sum((stage / f"{s}.safetensors").stat().st_size for s in SPLITS),
        "preprocessing": preprocessing,
        "splits": cfg.splits.model_dump(by_alias=True),
        "source": cfg.source.model_dump(by_alias=True, exclude_none=True),
        **extra,
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
    keys = ("digest", "counts", "classes", "bytes", "location", "preview")
    return {"status": {k: fields[k] for k in keys if k in fields}}
