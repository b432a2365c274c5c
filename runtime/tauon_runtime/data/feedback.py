"""`source.feedback`: a base Dataset's version plus a ModelDeployment's feedback, as a new version.

The base version is fetched from the artifact store and verified (its digest is the one the
base Dataset's status gives). Every feedback record of the deployment (see
``tauon_runtime.serve.shared_feedback``) with a true label among the base's classes and an
input of the base's shape becomes a training example:

- one example per input (by the sha256 of its bytes): the latest record's label wins;
- an input that is already in the base (any split) is left out: the base's validation and
  test examples never leak into training, and the champion and the challenger are judged on
  the same test split;
- validation and test are the base's, byte for byte; preprocessing (the normalisation
  measured on the base's training split) and the task's extras (tokenizer, feature names)
  are the base's too, so a model trained on the new version reads inputs as the base's did.

What was added and what was left out (and why) is in the manifest's ``feedback`` entry.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from tauon_runtime.contract import PrepareConfig
from tauon_runtime.data.sources import DataError
from tauon_runtime.store import ArtifactStore, StoreConfig, fetch_uri

SPLITS = ("train", "validation", "test")
# Manifest keys every version has; the rest are the task's extras (tokenizer, features, ...).
STANDARD_KEYS = frozenset(
    {
        "layoutVersion",
        "task",
        "digest",
        "path",
        "counts",
        "classes",
        "numClasses",
        "shape",
        "dtype",
        "bytes",
        "preprocessing",
        "splits",
        "source",
        "location",
        "feedback",
    }
)


def _sample_hash(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def load_base(
    cfg: PrepareConfig, work: Path
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The base version's splits and manifest, fetched and verified."""
    if not cfg.base_location or not cfg.base_digest:
        raise DataError("the feedback source needs the base Dataset's location and digest")
    dest = work / "base"
    fetch_uri(cfg.base_location, dest, cfg.base_digest.removeprefix("sha256:"))
    version = dest / "version"
    manifest = json.loads((version / "manifest.json").read_text())
    if manifest.get("digest") not in (cfg.base_digest, cfg.base_digest.removeprefix("sha256:")):
        raise DataError(
            f"the base version at {cfg.base_location} has digest {manifest.get('digest')}, "
            f"not {cfg.base_digest}"
        )
    arrays = {}
    for split in SPLITS:
        tensors = load_file(str(version / f"{split}.safetensors"))
        arrays[split] = {"x": tensors["x"], "y": tensors["y"]}
    return arrays, manifest


def feedback_records(store: ArtifactStore, key: str) -> list[dict[str, Any]]:
    """Every feedback record of the deployment, oldest first."""
    records = []
    for k in store.list_keys(f"{key.rstrip('/')}/records/"):
        try:
            records.append(json.loads(store.get(k)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # not a record (written by something else): never a training example
    return sorted(records, key=lambda r: str(r.get("timestamp", "")))


def _as_sample(record: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | str:
    """The record's input in the base's layout, or why it cannot be one."""
    given = record.get("input") or {}
    if "data" not in given:
        return "noInput"  # too large to have been kept with the prediction
    try:
        x = np.asarray(given["data"], dtype=np.float64)
    except (TypeError, ValueError):
        return "badInput"
    if tuple(x.shape) != shape:
        return "otherShape"
    if not np.isfinite(x).all():
        return "badInput"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if x.min() < info.min or x.max() > info.max:
            return "outOfRange"
        return np.rint(x).astype(dtype)
    return x.astype(dtype)


def from_feedback(
    cfg: PrepareConfig, work: Path
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any], dict[str, Any]]:
    """(splits, what the digest covers, manifest extras) of the base plus the feedback."""
    source = cfg.source.feedback
    assert source is not None
    store_config = StoreConfig.from_env()
    if store_config is None or not cfg.feedback_key:
        raise DataError("the feedback source needs the artifact store (TAUON_STORE_*)")
    base, manifest = load_base(cfg, work)
    classes = list(manifest["classes"])
    if manifest.get("task", "image-classification") != cfg.task:
        raise DataError(
            f"the base Dataset {source.base_dataset_ref.name!r} is a {manifest.get('task')} "
            f"data set, not {cfg.task}"
        )
    x_train = base["train"]["x"]
    shape, dtype = tuple(x_train.shape[1:]), x_train.dtype
    in_base = {_sample_hash(x) for split in SPLITS for x in base[split]["x"]}

    skipped: Counter[str] = Counter()
    relabelled = 0
    chosen: dict[str, tuple[np.ndarray, int]] = {}  # input hash -> (sample, class index)
    records = feedback_records(ArtifactStore(store_config), cfg.feedback_key)
    for record in records:
        label = record.get("trueLabel")
        if label is None:
            skipped["noLabel"] += 1
            continue
        if label not in classes:
            skipped["unknownLabel"] += 1
            continue
        sample = _as_sample(record, shape, dtype)
        if isinstance(sample, str):
            skipped[sample] += 1
            continue
        h = _sample_hash(sample)
        if h in in_base:
            skipped["inBase"] += 1
            continue
        if h in chosen:
            relabelled += 1  # the later record's label replaces the earlier one
        chosen[h] = (sample, classes.index(label))

    arrays = {s: dict(base[s]) for s in SPLITS}
    if chosen:
        xs = np.stack([x for x, _ in chosen.values()]).astype(dtype)
        ys = np.asarray([y for _, y in chosen.values()], dtype=base["train"]["y"].dtype)
        arrays["train"] = {
            "x": np.concatenate([x_train, xs]),
            "y": np.concatenate([base["train"]["y"], ys]),
        }
    extras = {k: v for k, v in manifest.items() if k not in STANDARD_KEYS}
    base_digest = manifest["digest"]
    meta: dict[str, Any] = {
        "classes": classes,
        "preprocessing": manifest["preprocessing"],
        **extras,
        "baseDigest": base_digest,
    }
    if cfg.task != "image-classification":
        meta["task"] = cfg.task
    lineage = {
        "baseDataset": source.base_dataset_ref.name,
        "baseDigest": base_digest,
        "modelDeployment": source.model_deployment_ref.name,
        "records": len(records),
        "added": len(chosen),
        "relabelled": relabelled,
        "skipped": dict(sorted(skipped.items())),
    }
    return arrays, meta, {**extras, "feedback": lineage}
