"""A real S3-compatible object store on loopback: SeaweedFS's all-in-one server (master, volume,
filer and S3 gateway) built from the Go module proxy by hack/build-seaweedfs.sh, with one bucket
and one identity. It runs as a host process, as an external cloud service would: pods of the node
agent reach it at its loopback endpoint.

    store = ObjectStore.start(state_dir)          # or cluster.start_object_store()
    store.endpoint, store.bucket, store.access_key, store.secret_key
    store.stop()
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localkube.procutil import alive, free_port, terminate

HACK = Path(__file__).resolve().parent.parent
DEFAULT_BUCKET = "tauon"
DEFAULT_REGION = "us-east-1"


class ObjectStoreError(RuntimeError):
    """SeaweedFS could not be built, started or given its bucket."""


def build_weed() -> Path:
    """Builds (or finds in the cache) SeaweedFS's `weed`; returns its path."""
    out = subprocess.run([str(HACK / "build-seaweedfs.sh")], check=True, stdout=subprocess.PIPE,
                         text=True)
    return Path(out.stdout.strip().splitlines()[-1]) / "bin" / "weed"


def identities(access_key: str, secret_key: str) -> dict:
    """SeaweedFS's -s3.config: one identity allowed everything on every bucket."""
    return {"identities": [{
        "name": "tauon",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}


@dataclass
class ObjectStore:
    endpoint: str
    bucket: str
    region: str
    access_key: str
    secret_key: str
    state_dir: Path
    pid: int = 0

    @classmethod
    def start(cls, state_dir: Path, bucket: str = DEFAULT_BUCKET, weed: Path | None = None,
              timeout: float = 60.0, spawn=None) -> "ObjectStore":
        """Starts `weed server` on loopback with data under state_dir/s3, creates `bucket` and
        waits until an authenticated S3 request succeeds. `spawn(name, argv)` (a Cluster's
        `spawn`) makes the process the cluster's, stopped with it."""
        weed = weed or build_weed()
        root = Path(state_dir) / "s3"
        (root / "data").mkdir(parents=True, exist_ok=True)
        access_key, secret_key = "tauon-" + secrets.token_hex(6), secrets.token_hex(20)
        config = root / "identities.json"
        config.write_text(json.dumps(identities(access_key, secret_key)))
        config.chmod(0o600)
        s3, master, volume, filer = free_port(), free_port(), free_port(), free_port()
        grpc = [free_port() for _ in range(4)]  # the defaults (port + 10000) may be taken
        argv = [
            str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
            f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
            f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
            f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}", f"-s3.config={config}",
            "-master.volumeSizeLimitMB=256", "-volume.preStopSeconds=0",
        ]
        if spawn is not None:
            proc = spawn("seaweedfs", argv)
        else:
            log = open(root / "weed.log", "ab")
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=root)
            log.close()
        self = cls(endpoint=f"http://127.0.0.1:{s3}", bucket=bucket, region=DEFAULT_REGION,
                   access_key=access_key, secret_key=secret_key, state_dir=root, pid=proc.pid)
        try:
            # weed's address form host:port.grpcPort: the shell speaks gRPC to both
            self._create_bucket(weed, f"{master}.{grpc[0]}", f"{filer}.{grpc[2]}", proc,
                                time.monotonic() + timeout)
            self._wait_s3(proc, time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        (root / "store.json").write_text(json.dumps(self.info()))
        return self

    def info(self) -> dict:
        return {"endpoint": self.endpoint, "bucket": self.bucket, "region": self.region,
                "accessKey": self.access_key, "secretKey": self.secret_key, "pid": self.pid}

    def stop(self) -> None:
        if self.pid and alive(self.pid):
            terminate([self.pid], grace=5.0)

    def client(self, bucket: str | None = None):
        """An obstore S3Store on this store's bucket (the same client the runtime uses)."""
        from obstore.store import S3Store

        return S3Store(bucket or self.bucket, endpoint=self.endpoint, region=self.region,
                       access_key_id=self.access_key, secret_access_key=self.secret_key,
                       client_options={"allow_http": True})

    def secret(self, name: str = "tauon-store") -> dict:
        """The credentials as a Kubernetes Secret (the keys the chart and runtime expect)."""
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": "Opaque",
                "stringData": {"AWS_ACCESS_KEY_ID": self.access_key,
                               "AWS_SECRET_ACCESS_KEY": self.secret_key}}

    def _create_bucket(self, weed: Path, master: str, filer: str, proc, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            if not alive(proc.pid):
                raise ObjectStoreError(f"weed exited early; log in {self.state_dir}")
            res = subprocess.run(
                [str(weed), "shell", f"-master=127.0.0.1:{master}", f"-filer=127.0.0.1:{filer}"],
                input=f"s3.bucket.create -name {self.bucket}\n", capture_output=True, text=True,
                timeout=20)
            last = (res.stdout + res.stderr).strip()
            if f"created bucket {self.bucket}" in last or "already exist" in last:
                return
            time.sleep(0.5)
        raise ObjectStoreError(f"could not create bucket {self.bucket}: {last[-500:]}")

    def _wait_s3(self, proc, deadline: float) -> None:
        import obstore

        last: Exception | None = None
        store = self.client()
        while time.monotonic() < deadline:
            try:
                obstore.put(store, ".tauon-ready", b"ok")
                obstore.delete(store, ".tauon-ready")
                return
            except Exception as e:  # noqa: BLE001 - report the last error on timeout
                last = e
            time.sleep(0.25)
        raise ObjectStoreError(f"the S3 gateway at {self.endpoint} did not answer: {last}")
