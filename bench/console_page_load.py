"""How fast the console's pages load with 200 resources in a namespace.

A real control plane (no operator: the statuses are written here, shaped as a digits run
leaves them, each TrainingJob with a 100-epoch metric history), 200 objects (67 Datasets, 67
TrainingJobs, 66 ModelDeployments), and `tauon-operator console` as its own process. Measured,
each 30 times:
- the overview page and its live refresh;
- a TrainingJob page (its curves drawn from the history);
- the baseline: the three LIST calls the overview must make, straight to the API server.

When Debian's chromium and chromedriver are installed, the overview is also loaded in headless
Chromium (navigation start to load event). Prints; never asserts. The last line is one JSON
object.

    python bench/console_page_load.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hack"))
from localkube import Cluster  # noqa: E402
from localkube.procutil import free_port, terminate, wait_for_url  # noqa: E402

import localplatform  # noqa: E402
from tauon_operator.kube import Kube  # noqa: E402

NS, RUNS, GOAL_MS = "bench", 30, 300.0
GROUP = "tauon.dev/v1alpha1"


def objects() -> list[tuple[dict, dict]]:
    """(object, status) for 200 resources."""
    history = [{"epoch": e, "trainLoss": 1 / e, "loss": 1.2 / e, "accuracy": 1 - 0.5 / e}
               for e in range(1, 101)]
    out = []
    for i in range(67):
        out.append(({"apiVersion": GROUP, "kind": "Dataset", "metadata": {"name": f"data-{i}"},
                     "spec": {"source": {"builtin": {"name": "digits"}}}},
                    {"phase": "Ready", "digest": "d" * 64, "classes": [str(c) for c in range(10)],
                     "counts": {"train": 1437, "validation": 180, "test": 180, "total": 1797}}))
        out.append(({"apiVersion": GROUP, "kind": "TrainingJob", "metadata": {"name": f"run-{i}"},
                     "spec": {"datasetRef": {"name": f"data-{i}"}, "model": {"architecture": "cnn"}}},
                    {"phase": "Succeeded", "restarts": 0,
                     "progress": {"epoch": 100, "totalEpochs": 100, "percent": 100.0},
                     "metrics": {"latest": history[-1], "best": history[-1], "history": history},
                     "model": {"sha256": "a" * 64, "metrics": {"accuracy": 0.97}}}))
    for i in range(66):
        out.append(({"apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": f"serve-{i}"},
                     "spec": {"model": {"trainingJobRef": {"name": f"run-{i}"}}}},
                    {"phase": "Ready", "modelDigest": "a" * 64, "feedbackCount": 12,
                     "replicas": {"desired": 1, "ready": 1, "updated": 1}}))
    return out


def timed(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return (time.perf_counter() - t) * 1000


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1)}


def browser_load(url: str) -> dict[str, float] | None:
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        samples = []
        for _ in range(10):
            driver.get(url)
            samples.append(driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime"))
        return figures(samples)
    finally:
        driver.quit()


def main() -> int:
    with Cluster.start() as cluster:
        localplatform.install_crds(cluster)
        cluster.kubectl("create", "namespace", NS)
        items = objects()
        cluster.kubectl("apply", "-n", NS, "-f", "-",
                        input="\n---\n".join(json.dumps(o) for o, _ in items))
        for obj, status in items:
            plural = {"Dataset": "tds", "TrainingJob": "tj", "ModelDeployment": "mdep"}[obj["kind"]]
            cluster.kubectl("patch", plural, obj["metadata"]["name"], "-n", NS, "--subresource=status",
                            "--type=merge", "-p", json.dumps({"status": status}))
        port = free_port()
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "tauon_operator", "console", "--host", "127.0.0.1",
                                 "--port", str(port), "--namespace", NS],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_url(f"{base}/healthz", 60, proc=proc)
            pages = {"overview": f"{base}/?namespace={NS}", "overview_live": f"{base}/live/overview?namespace={NS}",
                     "trainingjob": f"{base}/trainingjobs/{NS}/run-3"}
            for url in pages.values():  # warm
                timed(url)
            result = {name: figures([timed(url) for _ in range(RUNS)]) for name, url in pages.items()}

            os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
            kube = Kube.from_environment()
            import asyncio

            async def lists() -> float:
                t = time.perf_counter()
                await asyncio.gather(*(kube.list_objects(GROUP, k, NS)
                                       for k in ("Dataset", "TrainingJob", "ModelDeployment")))
                return (time.perf_counter() - t) * 1000

            result["baseline_lists"] = figures([asyncio.run(lists()) for _ in range(RUNS)])
            result["browser_overview"] = browser_load(pages["overview"])
        finally:
            terminate([proc], grace=5, group=False)
    count = len(items)
    print(f"{count} resources in namespace {NS}; {RUNS} requests each, milliseconds:")
    for name, f in result.items():
        if f:
            print(f"  {name:<18} p50 {f['p50']:>7.1f}  p95 {f['p95']:>7.1f}")
    worst = max(result["overview"]["p95"], (result["browser_overview"] or {}).get("p95", 0.0))
    summary = {
        "bench": "console_page_load", "resources": count, **result,
        "goalMs": GOAL_MS, "ratioVsGoal": round(worst / GOAL_MS, 3),
        "ratioVsBaseline": round(result["overview"]["p50"] / result["baseline_lists"]["p50"], 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
