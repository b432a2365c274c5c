"""How much the local control plane costs: cold build time, warm start time, memory.

    python bench/cluster_start.py [--starts 3] [--rebuild]

Prints figures; it asserts nothing. The cold build time is the one recorded by
hack/build-control-plane.sh when it last built into the cache; `--rebuild` measures it again
now, in a throw-away cache (that takes minutes and downloads the modules if they are not cached).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
from localkube.cluster import HACK, Cluster, build_binaries  # noqa: E402


def cold_build_seconds(rebuild: bool) -> tuple[float | None, str]:
    if rebuild:
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.monotonic()
            subprocess.run([str(HACK / "build-control-plane.sh")], check=True,
                           env={**os.environ, "TAUON_CACHE": cache}, stdout=subprocess.DEVNULL)
            return time.monotonic() - t0, "measured now (Go module cache as it is)"
    recorded = build_binaries().parent / "build-seconds"
    if recorded.exists():
        return float(recorded.read_text()), f"recorded by the last cold build ({recorded})"
    return None, "no cold build recorded (binaries predate the recording); use --rebuild"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--starts", type=int, default=3, help="warm starts to time (default 3)")
    ap.add_argument("--rebuild", action="store_true", help="measure a cold build now")
    args = ap.parse_args()

    build, how = cold_build_seconds(args.rebuild)
    bin_dir = build_binaries()
    starts, rss = [], {}
    for _ in range(args.starts):
        t0 = time.monotonic()
        with Cluster.start(bin_dir=bin_dir) as cluster:
            starts.append(time.monotonic() - t0)
            time.sleep(5)  # let controllers settle before reading memory
            rss = cluster.rss_bytes()

    mib = 1024 * 1024
    print("control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok "
          "(4 nodes x 8 GPUs), volume provisioner")
    print(f"cold build      : {'n/a' if build is None else f'{build:.0f} s'}  [{how}]")
    print(f"warm start      : median {statistics.median(starts):.1f} s, "
          f"min {min(starts):.1f} s, max {max(starts):.1f} s over {len(starts)} starts "
          "(certificates to 4 Ready nodes)")
    print(f"memory (RSS)    : {sum(rss.values()) / mib:.0f} MiB in all")
    for name, value in sorted(rss.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24}{value / mib:8.0f} MiB")
    print(f"ratio           : warm start is {build / statistics.median(starts):.0f}x faster than a "
          "cold build" if build else "")


if __name__ == "__main__":
    main()
