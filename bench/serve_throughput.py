"""Throughput and latency of `tauon-runtime serve`, batching on and off, PyTorch and ONNX.

Starts the real server (``python -m tauon_runtime serve``) on 127.0.0.1 with a model exported
the way training exports it (model.safetensors and model.onnx), once per model format (the
torch backend, and the onnxruntime backend of the runtime-edge image) and batching mode, sends a
bounded number of requests at concurrency 1, 8, 32 and 128 and prints requests/s, p50 and p99
latency, and the mean batch size the server formed (from its /metrics); then the ONNX/PyTorch
ratios and the install size of each image's Python packages (the edge lock's set against the
runtime's, torch included, measured from this environment's installed files). Client and server
share the machine, so the figures are a floor. Prints; never asserts.

    python bench/serve_throughput.py                       # seed CNN on 8x8 digits, CPU
    python bench/serve_throughput.py --architecture resnet18 --image-size 32 --channels 3
    python bench/serve_throughput.py --model-dir /path/to/exported/model --endpoint v2
    python bench/serve_throughput.py --peers kserve,litserve    # beside KServe and LitServe
    python bench/serve_throughput.py --peers kserve,litserve --architecture resnet18 \
        --image-size 64 --channels 3

With --peers, the same exported model is also served by each peer (bench/serve_peers.py says
how), on the Tauon endpoint whose request body is the same (KServe: OIP v2; LitServe: the
/v1/predict body), at the same concurrencies, and the model alone (the batched forward in a
loop, no HTTP) gives the ceiling. The last line is one JSON object; `ratioVsPeer` is Tauon's
req/s over the better peer's at concurrency 32 (same body), `ratioVsModelOnly` Tauon's req/s at
the highest concurrency over the model-only samples/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import tomllib
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
from localkube.procutil import free_port, terminate, wait_for_url  # noqa: E402

import serve_peers  # noqa: E402 - bench/, beside this script


def export_untrained(out: Path, architecture: str, channels: int, size: int) -> Path:
    """Throughput does not depend on the weights: an untrained export of the right shape."""
    import torch

    from tauon_runtime.models import build_model, export_model

    torch.manual_seed(0)
    model = build_model(architecture, 10, channels, size)
    export_model(model, out, {
        "name": "bench", "architecture": architecture, "modelOptions": {}, "numClasses": 10,
        "classes": [str(i) for i in range(10)], "inputShape": [channels, size, size],
        "preprocessing": {"scale": 255.0, "mean": [0.5] * channels, "std": [0.25] * channels},
        "metrics": {}, "datasetDigest": "bench",
    })
    return out


def scrape_batches(text: str) -> tuple[float, float]:
    total = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        m = re.match(r"^tauon_serve_batch_size_(sum|count) (\S+)$", line)
        if m:
            total[m.group(1)] = float(m.group(2))
    return total["sum"], total["count"]


async def load(base: str, path: str, body: bytes, concurrency: int, requests: int,
               headers: dict[str, str] | None = None) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    headers = headers or {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(f"{base}/metrics") as r:
            sum0, count0 = scrape_batches(await r.text())

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with s.post(f"{base}{path}", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        async with s.get(f"{base}/metrics") as r:
            sum1, count1 = scrape_batches(await r.text())
    lat = sorted(latencies)
    return {
        "rps": len(lat) / elapsed,
        "p50": 1000 * statistics.median(lat),
        "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "batch": (sum1 - sum0) / max(1.0, count1 - count0),
        "errors": errors,
    }


def installed_mib(roots: list[str]) -> tuple[float, int]:
    """(MiB, distributions) of the installed files of `roots` and everything they require, as
    this environment resolved them (each distribution's RECORD)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo, total = list(roots), 0
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for f in dist.files or ():
            path = Path(str(dist.locate_file(f)))
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return total / 2**20, len(seen)


def install_sizes() -> dict[str, dict[str, float]]:
    edge = [line.split("==")[0] for line in (ROOT / "docker" / "requirements-edge.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for image, roots in (("runtime-edge", edge), ("runtime", [r.split("==")[0] for r in runtime])):
        mib, count = installed_mib(roots)
        out[image] = {"mib": round(mib, 1), "distributions": count}
    return out


def request_body(endpoint: str, model_dir: Path) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one request of one sample; `v2-binary` is the OIP binary
    tensor extension, the wire format tritonclient uses by default."""
    card = json.loads((model_dir / "model.json").read_text())
    c, h, w = card["inputShape"]
    pixels = np.random.default_rng(0).integers(0, 256, (c, h, w))
    sample = pixels.tolist()
    json_headers = {"Content-Type": "application/json"}
    if endpoint == "v2-binary":
        raw = pixels.astype(np.uint8).tobytes()
        header = json.dumps({"inputs": [{
            "name": "input", "shape": [1, c, h, w], "datatype": "UINT8",
            "parameters": {"binary_data_size": len(raw)}}]}).encode()
        return "/v2/models/bench/infer", header + raw, {
            "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    if endpoint == "v2":
        return "/v2/models/bench/infer", json.dumps({"inputs": [{
            "name": "input", "shape": [1, c, h, w], "datatype": "UINT8", "data": sample}]}).encode(), json_headers
    return "/v1/predict", json.dumps({"instances": [sample]}).encode(), json_headers


async def bench_mode(args: argparse.Namespace, model_dir: Path, max_batch: int, workdir: Path,
                     endpoint: str | None = None, peer: serve_peers.Peer | None = None,
                     fmt: str = "safetensors") -> list[dict]:
    port = free_port()
    endpoint = endpoint or args.endpoint
    path, body, headers = request_body(endpoint, model_dir)
    server = peer.name if peer else "tauon"
    if peer:
        argv, ready, path = serve_peers.command(peer, model_dir, port, max_batch, args.max_latency_ms)
    else:
        config = {
            "modelName": "bench", "modelDir": str(model_dir), "host": "127.0.0.1", "port": port,
            "device": args.device, "batching": {"maxBatchSize": max_batch, "maxLatencyMs": args.max_latency_ms},
            "modelFormat": fmt,
        }
        cfg_path = workdir / f"serve-{fmt}-{max_batch}.json"
        cfg_path.write_text(json.dumps(config))
        argv, ready = [sys.executable, "-m", "tauon_runtime", "serve", "--config", str(cfg_path)], "/v2/health/ready"
    log_path = workdir / f"{server}-{fmt}-{max_batch}-{endpoint}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            await asyncio.to_thread(wait_for_url, f"{base}{ready}", 180, proc)
        except (ChildProcessError, TimeoutError) as e:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"the server did not become ready: {e}") from e
        await load(base, path, body, 4, 40, headers)  # warm-up: connections, allocator, caches
        rows = []
        for concurrency in args.concurrency:
            # Steady state: the batcher remembers recent concurrency for up to a second.
            await asyncio.sleep(1.2)
            await load(base, path, body, concurrency, 5 * concurrency, headers)
            stats = await load(base, path, body, concurrency, args.requests, headers)
            batching = "on" if max_batch > 1 and server != "kserve" else "off"
            if peer:  # the mean batch comes from Tauon's own /metrics
                stats["batch"] = float("nan")
            rows.append({"server": server, "format": fmt, "endpoint": endpoint, "batching": batching,
                         "concurrency": concurrency, **stats})
            print(f"  {server:>8} {fmt:>11} {endpoint:>7}  batching {batching:>3}  concurrency {concurrency:>3}: "
                  f"{stats['rps']:8.1f} req/s  p50 {stats['p50']:7.2f} ms  p99 {stats['p99']:7.2f} ms  "
                  f"mean batch {stats['batch']:5.1f}  errors {stats['errors']}", flush=True)
        return rows
    finally:
        terminate([proc], grace=30, group=True)


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tauon-bench-serve-") as tmp:
        workdir = Path(tmp)
        model_dir = Path(args.model_dir) if args.model_dir else export_untrained(
            workdir / "model", args.architecture, args.channels, args.image_size)
        print(f"serve_throughput: model {model_dir}, endpoint {args.endpoint}, {args.requests} requests "
              f"per level, device {args.device}, {os.cpu_count()} CPUs", flush=True)
        card = json.loads((model_dir / "model.json").read_text())
        onnx = card.get("onnx") or {}
        formats = [f for f in args.formats if f != "onnx" or onnx.get("file")]
        if formats != args.formats:
            print(f"no ONNX export to measure: {onnx.get('reason', 'the card has no onnx entry')}")
        rows = []
        peers = serve_peers.setup(args.peers) if args.peers else {}
        if peers:  # Tauon on every endpoint a peer is compared on, batching on
            for endpoint in sorted({serve_peers.ENDPOINT[name] for name in peers} | {args.endpoint}):
                for fmt in formats:
                    rows += await bench_mode(args, model_dir, args.max_batch_size, workdir, endpoint, fmt=fmt)
            for peer in peers.values():
                rows += await bench_mode(args, model_dir, args.max_batch_size, workdir,
                                         serve_peers.ENDPOINT[peer.name], peer)
        else:
            for fmt in formats:
                for max_batch in (args.max_batch_size, 1):
                    rows += await bench_mode(args, model_dir, max_batch, workdir, fmt=fmt)
        ceiling = serve_peers.model_only(model_dir, args.max_batch_size,
                                         device="cpu" if args.device == "auto" else args.device)
        print()
        print("| server | format | endpoint | batching | concurrency | req/s | p50 ms | p99 ms | mean batch |")
        print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['server']} | {r['format']} | {r['endpoint']} | {r['batching']} | {r['concurrency']} | "
                  f"{r['rps']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['batch']:.1f} |")
        print(f"model only (batched forward of {args.max_batch_size} in a loop, no HTTP): "
              f"{ceiling:.0f} samples/s")
        ratios = {}
        by = {(r["format"], r["endpoint"], r["batching"], r["concurrency"]): r
              for r in rows if r["server"] == "tauon"}
        for (fmt, endpoint, batching, concurrency), r in by.items():
            torch_row = by.get(("safetensors", endpoint, batching, concurrency))
            if fmt == "onnx" and torch_row:
                ratios[f"{endpoint}-batching-{batching}-c{concurrency}"] = {
                    "rps": round(r["rps"] / torch_row["rps"], 2),
                    "p50": round(r["p50"] / torch_row["p50"], 2),
                }
        if ratios:
            print("onnx / torch:", ", ".join(f"{k} req/s x{v['rps']} p50 x{v['p50']}" for k, v in ratios.items()))
        sizes = install_sizes()
        print("installed Python packages:", ", ".join(
            f"{k} {v['mib']:.0f} MiB ({v['distributions']} distributions)" for k, v in sizes.items()))
        line = summary(rows, ceiling, args)
        line |= {"cpus": os.cpu_count(), "endpoint": args.endpoint,
                 "onnx": {k: onnx.get(k) for k in ("exporter", "opset", "maxAbsDiff")},
                 "ratioOnnxOverTorch": ratios, "installMiB": sizes}
        print(json.dumps(line))


def summary(rows: list[dict], ceiling: float, args: argparse.Namespace) -> dict:
    """The JSON line: every row, the ceiling, and the ratios against the better peer."""
    def rps(server: str, endpoint: str, c: int) -> float | None:
        return next((r["rps"] for r in rows if r["server"] == server and r["endpoint"] == endpoint
                     and r["concurrency"] == c and r["format"] == "safetensors"
                     and r["batching"] in ("on", "off")), None)
    out = {"bench": "serve_throughput", "architecture": args.architecture,
           "inputShape": [args.channels, args.image_size, args.image_size],
           "maxBatchSize": args.max_batch_size, "maxLatencyMs": args.max_latency_ms,
           "modelOnlySamplesPerSecond": round(ceiling, 1), "load1": round(os.getloadavg()[0], 2),
           "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    peer_rps = {p: rps(p, serve_peers.ENDPOINT[p], 32) for p in args.peers or []}
    peer_rps = {p: v for p, v in peer_rps.items() if v}
    if peer_rps:
        better = max(peer_rps, key=peer_rps.get)
        ours = rps("tauon", serve_peers.ENDPOINT[better], 32)
        out |= {"betterPeer": better, "ratioVsPeer": round(ours / peer_rps[better], 3) if ours else None,
                "ratioVsEachPeer": {p: round((rps("tauon", serve_peers.ENDPOINT[p], 32) or 0) / v, 3)
                                    for p, v in peer_rps.items()}}
    top = max(args.concurrency)
    tops = {r["endpoint"]: r["rps"] for r in rows if r["server"] == "tauon" and r["concurrency"] == top
            and r["batching"] == "on" and r["format"] == "safetensors"}
    out["ratioVsModelOnly"] = {e: round(v / ceiling, 3) for e, v in sorted(tops.items())} or None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", help="an exported model (default: an untrained export made here)")
    p.add_argument("--architecture", default="cnn")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--endpoint", choices=("predict", "v2", "v2-binary"), default="predict")
    p.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--max-batch-size", type=int, default=32, help="batching on: the largest batch")
    p.add_argument("--max-latency-ms", type=float, default=5.0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--formats", nargs="+", choices=("safetensors", "onnx"), default=["safetensors", "onnx"],
                   help="the model formats (serving backends) to measure")
    p.add_argument("--peers", type=lambda v: [x for x in v.split(",") if x], default=[],
                   help=f"comma-separated peers served side by side: {','.join(serve_peers.PEERS)}")
    args = p.parse_args()
    if unknown := set(args.peers) - set(serve_peers.PEERS):
        p.error(f"--peers: unknown {sorted(unknown)}; choose from {serve_peers.PEERS}")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
