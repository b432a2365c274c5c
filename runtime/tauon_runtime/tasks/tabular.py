"""tabular-classification: named numeric feature columns and a label column.

Prepared `x` is float32 `[N, F, 1, 1]` (features as channels), so the shared per-channel
normalisation is per-feature standardisation; its mean and std are measured on the train split
only and recorded, with the feature names, in the dataset version and the model card. Serving
maps a JSON row `{"features": {name: value}}` onto the same order.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from tauon_runtime.contract import Columns, PrepareConfig
from tauon_runtime.data import sources
from tauon_runtime.data.sources import DataError, RawData

from . import source_file


def builtin(name: str) -> RawData:
    from sklearn import datasets  # wine and breast_cancer ship with scikit-learn: no network

    bunch = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]()
    return RawData(
        bunch.data.astype(np.float32),
        bunch.target.astype(np.int64),
        [str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
    )


def _csv_file(path: Path) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv")
        if len(found) != 1:
            raise DataError(f"expected exactly one .csv file in {path}, found {len(found)}")
        return found[0]
    return path


def class_order(labels: list[str]) -> list[str]:
    """Numeric labels in numeric order, then the others alphabetically."""
    return sorted(
        set(labels), key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s)
    )


def read_csv(path: Path, columns: Columns) -> RawData:
    """A CSV with a header row: `columns.label` and the `columns.features` (default: the rest)."""
    path = _csv_file(path)
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise DataError(f"{path.name}: needs a header row and at least one data row")
    header, rows = [h.strip() for h in rows[0]], rows[1:]
    if columns.label not in header:
        raise DataError(
            f"columns.label {columns.label!r} is not a column of {path.name}; "
            f"its columns are {', '.join(header[:20])}"
        )
    features = columns.features or [h for h in header if h != columns.label]
    missing = [f for f in features if f not in header]
    if missing:
        raise DataError(
            f"columns.features {', '.join(map(repr, missing))} not in {path.name}; "
            f"its columns are {', '.join(header[:20])}"
        )
    if columns.label in features:
        raise DataError(f"columns.features includes the label column {columns.label!r}")
    if not features:
        raise DataError(f"{path.name}: no feature columns besides {columns.label!r}")
    label_at, at = header.index(columns.label), [header.index(f) for f in features]
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path.name} line {n}: {len(row)} values, header has {len(header)}")
        for j, (name, k) in enumerate(zip(features, at, strict=True)):
            try:
                x[n - 2, j] = float(row[k])
            except ValueError:
                raise DataError(
                    f"feature column {name!r} is not numeric: line {n} has {row[k][:40]!r}"
                ) from None
    if not np.isfinite(x).all():
        bad = features[int(np.flatnonzero(~np.isfinite(x).all(axis=0))[0])]
        raise DataError(f"feature column {bad!r} has a non-finite value (nan or inf)")
    labels = [r[label_at].strip() for r in rows]
    names = class_order(labels)
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[s] for s in labels], dtype=np.int64)
    return RawData(x, y, names, feature_names=list(features))


def feature_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-feature mean and std of `x` [N, F]; a constant feature gets std 1."""
    mean = x.astype(np.float64).mean(axis=0)
    std = x.astype(np.float64).std(axis=0)
    std = np.where(std < 1e-12, 1.0, std)
    return [float(v) for v in mean], [float(v) for v in std]


class TabularClassification:
    name = "tabular-classification"

    def load_raw(self, cfg: PrepareConfig, work: Path) -> RawData:
        src = cfg.source
        if src.builtin is not None:
            return sources.first(builtin(src.builtin.name), src.builtin.limit)
        return read_csv(source_file(cfg, work, (".csv",), "a CSV"), cfg.columns)

    def prepare(
        self, cfg: PrepareConfig, raw: RawData, index: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
        xs = {s: np.ascontiguousarray(raw.x[i, :, None, None]) for s, i in index.items()}
        f = raw.x.shape[1]
        if cfg.preprocessing.normalize:
            mean, std = feature_stats(raw.x[index["train"]])
        else:
            mean, std = [0.0] * f, [1.0] * f
        preprocessing = {
            "normalize": cfg.preprocessing.normalize,
            "scale": 1.0,  # features are standardised as they are: (x - mean) / std
            "mean": mean,
            "std": std,
        }
        return xs, preprocessing, {"features": list(raw.feature_names or [])}

    def card_fields(self, manifest: dict[str, Any]) -> dict[str, Any]:
        pre = manifest["preprocessing"]
        return {
            "features": list(manifest["features"]),
            "preprocessing": {k: pre[k] for k in ("scale", "mean", "std")},
        }

    def model_options(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return {}
