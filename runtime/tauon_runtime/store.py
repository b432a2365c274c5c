"""The artifact store: exported models in any S3-compatible object store, under content-addressed,
immutable keys, published atomically and verified end to end.

    s3://<bucket>/<prefix>/<namespace>/models/<name>/<sha256>/
        model.safetensors  model.json  [model.onnx ...]   every file of the exported directory
        manifest.json                                      written LAST: {files: {name: sha256}}
    s3://<bucket>/<prefix>/<namespace>/datasets/<name>/<digest>/
        version/{train,validation,test}.safetensors  version/manifest.json   a prepared version
        manifest.json

`sha256` in the key is the digest of the weights (the model card's `sha256`, what
`status.model.sha256` reports and a ModelDeployment pins). A version exists only once its
manifest does, and the manifest is written only after every file was uploaded and read back with
the digest it lists: an upload killed half-way leaves no published model, and a retry publishes
the same single version. `fetch` reads the manifest, checks it vouches for the expected digest,
downloads every file and verifies each one before anything is moved into place.

The client is obstore (the Rust `object_store` crate of Apache Arrow): no Python dependencies.
Credentials come from the environment only (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, set by the
operator from a Secret); endpoint, bucket, prefix and region from TAUON_STORE_*.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tauon_runtime.contract.keys import (
    ENV_NAMESPACE,
    ENV_STATUS_TARGET,
    ENV_STORE_BUCKET,
    ENV_STORE_ENDPOINT,
    ENV_STORE_PREFIX,
    ENV_STORE_REGION,
)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SHA256 = re.compile(r"^[a-f0-9]{64}$")


class StoreError(RuntimeError):
    """The store cannot be reached, refuses the credentials, or has no such object."""

    reason = "StoreUnavailable"


class ChecksumMismatch(StoreError):
    """An object's bytes are not the ones the manifest (or the caller) vouches for."""

    reason = "ChecksumMismatch"


class NotPublished(StoreError):
    """No manifest at the URI: nothing was ever published there (or the upload never finished)."""

    reason = "ModelNotPublished"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # without a leading slash; a "directory" ends with "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/key` -> (bucket, key); a clear error for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"{uri!r} is not an s3:// URI")
    if not parsed.netloc:
        raise ValueError(f"{uri!r} names no bucket: expected s3://<bucket>/<key>")
    if not _BUCKET.match(parsed.netloc):
        raise ValueError(f"{uri!r}: {parsed.netloc!r} is not a valid bucket name")
    key = parsed.path.lstrip("/")
    if not key:
        raise ValueError(f"{uri!r} names no key: expected s3://<bucket>/<key>")
    return S3Location(parsed.netloc, key)


def _version_key(prefix: str, namespace: str, kind: str, name: str, sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ValueError(f"sha256 {sha256!r} is not 64 lowercase hexadecimal characters")
    parts = [p for p in prefix.strip("/").split("/") if p] + [namespace, kind, name, sha256]
    return "/".join(parts) + "/"


def model_key(prefix: str, namespace: str, name: str, sha256: str) -> str:
    """The immutable key (a "directory", ending in /) of one model version."""
    return _version_key(prefix, namespace, "models", name, sha256)


def dataset_key(prefix: str, namespace: str, name: str, digest: str) -> str:
    """The immutable key of one prepared dataset version (`digest`: `sha256:<hex>`)."""
    return _version_key(prefix, namespace, "datasets", name, digest.removeprefix("sha256:"))


def checkpoints_key(prefix: str, namespace: str, name: str, uid: str) -> str:
    """Where one TrainingJob's checkpoints live (a "directory"): its uid is part of the key, so a
    TrainingJob deleted and made again under the same name never resumes the old one's run."""
    parts = [p for p in prefix.strip("/").split("/") if p] + [namespace, "checkpoints", name, uid]
    return "/".join(parts) + "/"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def directory_files(model_dir: Path) -> dict[str, dict[str, Any]]:
    """Every regular file under `model_dir` (relative POSIX names, sorted) with its sha256 and
    size: what a manifest lists."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def manifest_for(files: dict[str, dict[str, Any]], sha256: str, card: dict[str, Any]) -> dict:
    """The manifest of a version: its digest, its files and the lineage from the card."""
    if MANIFEST in files:
        raise ValueError(f"an exported model may not hold a file named {MANIFEST}")
    lineage = {
        k: card[k]
        for k in ("name", "trainingJob", "datasetDigest", "createdAt", "metrics")
        if k in card
    }
    return {"version": MANIFEST_VERSION, "sha256": sha256, "files": files, **lineage}


def check_manifest(manifest: dict[str, Any], expected_sha256: str | None, where: str) -> None:
    """The manifest is well formed and vouches for `expected_sha256` (when given)."""
    files = manifest.get("files")
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(files, dict) or not files:
        raise StoreError(f"{where}: not a Tauon model manifest (version {manifest.get('version')})")
    for name in files:
        if name.startswith("/") or ".." in name.split("/"):
            raise StoreError(f"{where}: manifest names an unsafe path {name!r}")
    if expected_sha256 is not None and manifest.get("sha256") != expected_sha256:
        raise ChecksumMismatch(
            f"{where}: the published model has sha256 {manifest.get('sha256')}, "
            f"not {expected_sha256} as expected"
        )


@dataclass(frozen=True)
class StoreConfig:
    endpoint: str = ""  # empty: AWS's own endpoint for the region
    bucket: str = ""
    prefix: str = "tauon"
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StoreConfig | None:
        """The store the operator configured, or None when there is none."""
        env = dict(os.environ if env is None else env)
        if not env.get(ENV_STORE_BUCKET):
            return None
        return cls(
            endpoint=env.get(ENV_STORE_ENDPOINT, ""),
            bucket=env[ENV_STORE_BUCKET],
            prefix=env.get(ENV_STORE_PREFIX, "tauon"),
            region=env.get(ENV_STORE_REGION) or "us-east-1",
        )

    @classmethod
    def for_bucket(cls, bucket: str, env: dict[str, str] | None = None) -> StoreConfig:
        """Another bucket on the configured endpoint and region (an s3:// URI, a Dataset's
        source), whether or not a store bucket is configured."""
        env = dict(os.environ if env is None else env)
        return cls(
            endpoint=env.get(ENV_STORE_ENDPOINT, ""),
            bucket=bucket,
            prefix=env.get(ENV_STORE_PREFIX, "tauon"),
            region=env.get(ENV_STORE_REGION) or "us-east-1",
        )


def owner_from_env(env: dict[str, str] | None = None) -> tuple[str, str]:
    """(namespace, name) of the resource this pod works for, from the status target the
    operator sets (`<group>/<version>/namespaces/<ns>/<plural>/<name>`)."""
    env = dict(os.environ if env is None else env)
    parts = env.get(ENV_STATUS_TARGET, "").strip("/").split("/")
    namespace = env.get(ENV_NAMESPACE) or (parts[3] if len(parts) == 6 else "default")
    return namespace, parts[5] if len(parts) == 6 else ""


class ArtifactStore:
    """Publish and fetch model versions in one bucket."""

    def __init__(self, config: StoreConfig, *, timeout_s: float = 20.0):
        from obstore.store import S3Store

        self.config = config
        kwargs: dict[str, Any] = {"region": config.region}
        if config.endpoint:
            kwargs["endpoint"] = config.endpoint
        for env, key in (
            ("AWS_ACCESS_KEY_ID", "access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ):
            if os.environ.get(env):
                kwargs[key] = os.environ[env]
        self.client = S3Store(
            config.bucket,
            client_options={
                "allow_http": config.endpoint.startswith("http://"),
                "timeout": timedelta(seconds=timeout_s),
                "connect_timeout": timedelta(seconds=5),
            },
            # An unreachable store fails within seconds, not after the 3-minute default.
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=timeout_s),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=200),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
            **kwargs,
        )

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            where = self.config.endpoint or f"S3 in {self.config.region}"
            raise StoreError(f"{what} at {where} (bucket {self.config.bucket}): {first}") from None

    def _get(self, key: str) -> bytes:
        import obstore

        return bytes(self._call(f"GET {key}", obstore.get, self.client, key).bytes())

    def get(self, key: str) -> bytes:
        """One object's bytes (FileNotFoundError when there is none, StoreError otherwise)."""
        return self._get(key)

    # ----------------------------------------------------------------- publish
    def publish(
        self, model_dir: Path, key: str, sha256: str, card: dict[str, Any], under: str = ""
    ) -> str:
        """Upload every file of `model_dir` under `key` (below `under`, a relative folder, when
        given), verify each, then write the manifest. Idempotent: a version already published
        with this digest is left as it is."""
        import obstore

        loc = S3Location(self.config.bucket, key)
        try:
            existing = json.loads(self._get(key + MANIFEST))
            check_manifest(existing, sha256, loc.uri)
            return loc.uri  # immutable: never rewritten
        except FileNotFoundError:
            pass
        under = under.strip("/") + "/" if under.strip("/") else ""
        local = directory_files(Path(model_dir))
        files = {under + rel: meta for rel, meta in local.items()}
        manifest = manifest_for(files, sha256, card)
        for rel, meta in local.items():
            name = under + rel
            self._call(
                f"PUT {key}{name}", obstore.put, self.client, key + name, Path(model_dir) / rel
            )
            got = hashlib.sha256(self._get(key + name)).hexdigest()
            if got != meta["sha256"]:
                raise ChecksumMismatch(
                    f"{loc.uri}{name}: read back with sha256 {got}, uploaded {meta['sha256']}"
                )
        self._call(
            f"PUT {key}{MANIFEST}",
            obstore.put,
            self.client,
            key + MANIFEST,
            (json.dumps(manifest, indent=2) + "\n").encode(),
        )
        return loc.uri

    # ------------------------------------------------------------ plain objects
    def put_file(self, key: str, path: Path) -> str:
        """Upload one file to `key` (a single PUT: the object appears whole or not at all)."""
        import obstore

        self._call(f"PUT {key}", obstore.put, self.client, key, Path(path))
        return S3Location(self.config.bucket, key).uri

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object from memory (a single PUT)."""
        import obstore

        self._call(f"PUT {key}", obstore.put, self.client, key, data)

    def download(self, key: str, dest: Path) -> Path:
        """One object into `dest`, written beside it and renamed into place."""
        import obstore

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")

        def stream_to_file() -> None:
            with open(tmp, "wb") as f:
                for chunk in obstore.get(self.client, key).stream():
                    f.write(chunk)

        self._call(f"GET {key}", stream_to_file)
        os.replace(tmp, dest)
        return dest

    def list_keys(self, prefix: str) -> list[str]:
        """Every key below `prefix`, sorted."""
        import obstore

        def keys() -> list[str]:
            return [o["path"] for batch in obstore.list(self.client, prefix) for o in batch]

        return sorted(self._call(f"LIST {prefix}", keys))

    def list_objects(self, prefix: str) -> list[tuple[str, datetime]]:
        """(key, last modified) of every object below `prefix`, sorted by key."""
        import obstore

        def objects() -> list[tuple[str, datetime]]:
            return [
                (o["path"], o["last_modified"])
                for batch in obstore.list(self.client, prefix)
                for o in batch
            ]

        return sorted(self._call(f"LIST {prefix}", objects))

    def delete(self, key: str) -> None:
        import obstore

        self._call(f"DELETE {key}", obstore.delete, self.client, key)

    # ------------------------------------------------------------------- fetch
    def fetch(self, key: str, dest: Path, expected_sha256: str | None) -> dict[str, Any]:
        """Download the version at `key` into `dest` (replaced), every file verified against
        the manifest and the manifest against `expected_sha256`; returns the manifest."""
        loc = S3Location(self.config.bucket, key if key.endswith("/") else key + "/")
        return fetch_version(lambda name: self._get(loc.key + name), loc.uri, dest, expected_sha256)


def fetch_version(
    get: Callable[[str], bytes], where: str, dest: Path, expected_sha256: str | None
) -> dict[str, Any]:
    """Fetch one published version through `get(name) -> bytes` (FileNotFoundError for a
    missing object): the manifest, checked against `expected_sha256`, then every file it lists,
    each verified before anything is moved into `dest` (replaced atomically)."""
    try:
        manifest = json.loads(get(MANIFEST))
    except FileNotFoundError:
        raise NotPublished(f"{where}: no {MANIFEST}: no model was published there") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{where}{MANIFEST}: not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{where}{MANIFEST}: not a Tauon model manifest")
    check_manifest(manifest, expected_sha256, where)
    dest = Path(dest)
    stage = dest.with_name(f".{dest.name}.fetch-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        for name, meta in manifest["files"].items():
            try:
                data = get(name)
            except FileNotFoundError:
                raise NotPublished(f"{where}{name}: listed in the manifest but missing") from None
            got = hashlib.sha256(data).hexdigest()
            if got != (meta or {}).get("sha256"):
                raise ChecksumMismatch(
                    f"{where}{name}: sha256 {got} does not match {(meta or {}).get('sha256')} "
                    "in the manifest; refusing to use it"
                )
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def http_getter(base_url: str, timeout_s: float = 20.0) -> Callable[[str], bytes]:
    """GET `<base_url>/<name>` over http(s): a version published to a bucket that is served
    over HTTPS (or any web server holding the same layout). 404 is FileNotFoundError."""
    import urllib.error
    import urllib.request

    base = base_url if base_url.endswith("/") else base_url + "/"

    def get(name: str) -> bytes:
        url = base + name
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise FileNotFoundError(url) from None
            raise StoreError(f"GET {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise StoreError(f"GET {url}: {getattr(e, 'reason', e)}") from None

    return get


def fetch_uri(uri: str, dest: Path, expected_sha256: str) -> dict[str, Any]:
    """The storage initializer: the model version at an s3:// or https:// URI into `dest`."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        store, key = store_for_uri(uri)
        return store.fetch(key, dest, expected_sha256)
    if scheme in ("https", "http"):
        where = uri if uri.endswith("/") else uri + "/"
        return fetch_version(http_getter(uri), where, dest, expected_sha256)
    raise ValueError(f"{uri!r}: only s3:// and https:// models are fetched")


def store_for_uri(uri: str, config: StoreConfig | None = None) -> tuple[ArtifactStore, str]:
    """An ArtifactStore for the bucket an s3:// URI names (endpoint and region from `config`
    or the environment) and the key within it."""
    loc = parse_s3_uri(uri)
    if config is None:
        return ArtifactStore(StoreConfig.for_bucket(loc.bucket)), loc.key
    cfg = StoreConfig(config.endpoint, loc.bucket, config.prefix, config.region)
    return ArtifactStore(cfg), loc.key
