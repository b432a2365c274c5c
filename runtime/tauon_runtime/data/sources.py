"""Data sources: each returns raw samples as numpy arrays, before splitting.

Images are [N, C, H, W] with pixel values on a 0..255 scale (uint8 when they are whole numbers,
float32 otherwise), labels are int64 class indices into `classes`. No torch here: preparing data
does not need it.
"""

from __future__ import annotations

import csv
import hashlib
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tauon_runtime.contract import DatasetSource, HttpSource, S3Source, SyntheticSource

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class DataError(RuntimeError):
    """The data cannot be read as described."""


class DataIntegrityError(DataError):
    """Downloaded bytes are not the ones the Dataset pinned."""


@dataclass
class RawData:
    x: np.ndarray  # [N, C, H, W], 0..255 scale
    y: np.ndarray  # [N] int64
    classes: list[str]
    feature_names: list[str] | None = None  # tabular: x is [N, F], one name per column


def builtin_digits() -> RawData:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no network

    digits = load_digits()
    # Pixel intensities are 0..16; rescale to the 0..255 scale every other source uses.
    x = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    return RawData(x, digits.target.astype(np.int64), [str(c) for c in digits.target_names])


def first(raw: RawData, limit: int | None) -> RawData:
    """The first `limit` samples (a builtin's `limit`), in the data set's own order."""
    if limit is None:
        return raw
    return RawData(raw.x[:limit], raw.y[:limit], raw.classes, raw.feature_names)


def synthetic(src: SyntheticSource) -> RawData:
    """Learnable noise: each class is a smooth random prototype, each sample a noisy copy."""
    rng = np.random.default_rng(src.seed)
    c, h, w = src.shape
    # Low-resolution prototypes upsampled, so classes differ in structure a CNN can see.
    low = rng.random((src.num_classes, c, max(1, h // 2), max(1, w // 2)), dtype=np.float32)
    protos = low.repeat(2, axis=2).repeat(2, axis=3)[:, :, :h, :w]
    if protos.shape[2:] != (h, w):  # odd or unit sizes: pad by edge
        protos = np.pad(
            protos, ((0, 0), (0, 0), (0, h - protos.shape[2]), (0, w - protos.shape[3])), "edge"
        )
    y = rng.permutation(np.arange(src.num_samples) % src.num_classes).astype(np.int64)
    x = np.empty((src.num_samples, c, h, w), dtype=np.uint8)
    for start in range(
        0, src.num_samples, 1024
    ):  # in chunks: 224x224 images would not fit as float64
        part = y[start : start + 1024]
        noisy = 0.65 * protos[part] + 0.35 * rng.random((len(part), c, h, w), dtype=np.float32)
        x[start : start + len(part)] = np.rint(noisy * 255)
    return RawData(x, y, [f"class_{i}" for i in range(src.num_classes)])


# --------------------------------------------------------------------------------------------
# Files: ImageFolder trees, CSV, archives


def download_verified(src: HttpSource, dest: Path, timeout: float = 60.0) -> Path:
    """Stream `src.url` to `dest`, checking sha256; on mismatch delete it and raise."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(src.url, timeout=timeout) as resp, open(dest, "wb") as f:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
    except OSError as e:
        dest.unlink(missing_ok=True)
        raise DataError(f"cannot download {src.url}: {e}") from None
    got = digest.hexdigest()
    if got != src.sha256:
        dest.unlink(missing_ok=True)
        raise DataIntegrityError(
            f"sha256 mismatch for {src.url}: expected {src.sha256}, got {got}; nothing was written"
        )
    return dest


def download_s3_verified(src: S3Source, dest: Path) -> Path:
    """The object `src` names, from the artifact store's endpoint (or its own), checked
    against its sha256 before anything is kept."""
    from tauon_runtime.store import ArtifactStore, StoreConfig, StoreError

    base = StoreConfig.for_bucket(src.bucket)
    cfg = StoreConfig(
        src.endpoint or base.endpoint, src.bucket, base.prefix, src.region or base.region
    )
    uri = f"s3://{src.bucket}/{src.key}"
    try:
        data = ArtifactStore(cfg).get(src.key)
    except FileNotFoundError:
        raise DataError(f"{uri}: no such object") from None
    except StoreError as e:
        raise DataError(f"cannot download {uri}: {e}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != src.sha256:
        raise DataIntegrityError(
            f"sha256 mismatch for {uri}: expected {src.sha256}, got {got}; nothing was written"
        )
    dest.write_bytes(data)
    return dest


def download(src: DatasetSource, work: Path) -> Path:
    """The file an http or s3 source names, downloaded into `work` and verified."""
    if src.s3 is not None:
        return download_s3_verified(src.s3, work / (src.s3.key.rsplit("/", 1)[-1] or "object"))
    assert src.http is not None
    name = src.http.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    return download_verified(src.http, work / name)


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a tar(.gz) or zip archive, refusing members that escape `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for name in zf.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise DataError(f"archive member {name!r} escapes the extraction directory")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")  # rejects absolute paths, links out, devices
    else:
        raise DataError(f"{archive.name} is neither a tar nor a zip archive")
    return dest


def data_root(path: Path) -> Path:
    """Descend through wrapper directories (`archive/data/...`) to where the data starts."""
    while path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir():
            path = entries[0]
        else:
            break
    return path


def detect_format(root: Path) -> str:
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if root.is_dir():
        if any(p.suffix.lower() == ".csv" for p in root.iterdir()):
            return "csv"
        if any(p.is_dir() for p in root.iterdir()):
            return "imagefolder"
    raise DataError(
        f"{root} is neither an ImageFolder tree (one directory per class) nor a CSV file"
    )


def load_path(path: Path, fmt: str, work: Path, side: int | None = None) -> RawData:
    """Read a directory, a CSV file or an archive (unpacked under `work`)."""
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() != ".csv":
        path = extract(path, work / "extracted")
    root = data_root(path)
    fmt = detect_format(root) if fmt == "auto" else fmt
    return read_csv(root) if fmt == "csv" else read_imagefolder(root, side)


def read_imagefolder(root: Path, side: int | None = None) -> RawData:
    from PIL import Image

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (i, f)
        for i, d in enumerate(class_dirs)
        for f in sorted(d.rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(class_dirs) < 2 or not files:
        raise DataError(f"ImageFolder {root} needs at least two class directories with images")
    images: list[Image.Image] = []
    for _, f in files:
        with Image.open(f) as im:
            im.load()
            images.append(im)
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16") for im in images)
    images = [im.convert("L" if gray else "RGB") for im in images]
    if side:  # resize while reading, so mixed sizes are fine when a size is asked for
        images = [im.resize((side, side), Image.Resampling.BILINEAR) for im in images]
    arrays = [np.asarray(im) for im in images]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise DataError(
            f"images in {root} have different sizes {sorted(sizes)[:3]}...; set preprocessing.resize"
        )
    x = np.stack(arrays)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    y = np.array([i for i, _ in files], dtype=np.int64)
    return RawData(np.ascontiguousarray(x), y, [d.name for d in class_dirs])


def _infer_shape(n: int) -> tuple[int, int, int]:
    for c in (1, 3):
        side = round((n / c) ** 0.5)
        if n % c == 0 and side * side * c == n:
            return c, side, side
    raise DataError(
        f"cannot infer an image shape from {n} pixel columns (expected C*S*S with C in 1, 3)"
    )


def read_csv(path: Path) -> RawData:
    """A `label` column (else the first column) and pixel columns, one row per sample."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv")
        if len(found) != 1:
            raise DataError(f"expected exactly one .csv file in {path}, found {len(found)}")
        path = found[0]
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise DataError(f"{path} is empty")
    header = None
    try:
        float(rows[0][-1])
    except ValueError:
        header, rows = rows[0], rows[1:]
    label_col = header.index("label") if header and "label" in header else 0
    labels = [r[label_col] for r in rows]
    try:
        pixels = np.array([[float(v) for j, v in enumerate(r) if j != label_col] for r in rows])
    except ValueError as e:
        raise DataError(f"{path}: non-numeric pixel value ({e})") from None
    c, h, w = _infer_shape(pixels.shape[1])
    names = sorted(
        set(labels), key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s)
    )
    index = {name: i for i, name in enumerate(names)}
    whole = np.all(pixels == np.rint(pixels)) and pixels.min() >= 0 and pixels.max() <= 255
    x = (pixels.astype(np.uint8) if whole else pixels.astype(np.float32)).reshape(-1, c, h, w)
    return RawData(x, np.array([index[s] for s in labels], dtype=np.int64), names)


def resize(x: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of [N, C, H, W] to side x side, per channel, keeping the dtype."""
    from PIL import Image

    if x.shape[2:] == (side, side):
        return x
    out = np.empty((*x.shape[:2], side, side), dtype=x.dtype)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[i, c] if x.dtype == np.uint8 else x[i, c].astype(np.float32)
            im = Image.fromarray(plane, "L" if x.dtype == np.uint8 else "F")
            out[i, c] = np.asarray(im.resize((side, side), Image.Resampling.BILINEAR))
    return out
