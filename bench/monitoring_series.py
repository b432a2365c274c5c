"""How many Prometheus series one TrainingJob and one ModelDeployment add.

The operator's side is counted from its own collector (tauon_operator.resource_metrics) over
statuses shaped as a digits run writes them: a finished run (latest, best and test metrics), a
deployment without and with a canary; and it checks that the count per resource stays the same
for 1, 100 and 1,000 resources. The serving side is counted from a real `tauon-runtime serve`
(an untrained export of the seed CNN): its /metrics after the requests a deployment sees in
use (predictions of every class, v2 inference, feedback, bad input, health probes and scrapes).
Prints; never asserts. The last line is one JSON object.

    python bench/monitoring_series.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hack"))
sys.path.insert(0, str(HERE))
from localkube.procutil import free_port, terminate, wait_for_url  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tauon_operator.resource_metrics import ResourceMetrics  # noqa: E402

RUN = {
    "phase": "Succeeded", "restarts": 0, "startTime": "2027-01-15T08:00:00Z",
    "progress": {"epoch": 15, "totalEpochs": 15, "step": 675, "totalSteps": 675, "percent": 100.0},
    "metrics": {"latest": {"loss": 0.07, "accuracy": 0.97, "f1": 0.97, "trainLoss": 0.05},
                "best": {"loss": 0.06, "accuracy": 0.975, "f1": 0.974, "trainLoss": 0.05}},
    "model": {"sha256": "a" * 64, "metrics": {"loss": 0.09, "accuracy": 0.961, "f1": 0.96}},
}
SERVING = {"phase": "Ready", "modelDigest": "a" * 64, "replicas": {"desired": 2, "ready": 2}}
CANARY = {**SERVING, "canary": {"modelDigest": "b" * 64, "readyReplicas": 1, "trafficPercent": 10}}


def obj(kind: str, i: int, status: dict) -> dict:
    return {"kind": kind, "metadata": {"namespace": "ml", "name": f"{kind.lower()}-{i}", "uid": f"u{i}"},
            "status": status}


def operator_series(kind: str, status: dict, n: int) -> int:
    objects = [obj(kind, i, status) for i in range(n)]
    registry = CollectorRegistry()
    registry.register(ResourceMetrics(lambda k: objects if k == kind else []))
    return sum(len(f.samples) for f in text_string_to_metric_families(generate_latest(registry).decode()))


def post(url: str, body: dict) -> dict | None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError:
        return None


def serving_series() -> tuple[int, dict[str, int]]:
    """Series of one serving pod's /metrics after a realistic mix of requests, by family."""
    import numpy as np
    from serve_throughput import export_untrained

    with tempfile.TemporaryDirectory(prefix="tauon-bench-series-") as tmp:
        work = Path(tmp)
        model = export_untrained(work / "model", "cnn", 1, 8)
        port = free_port()
        (work / "serve.json").write_text(json.dumps({
            "modelName": "bench", "modelDir": str(model), "host": "127.0.0.1", "port": port,
            "device": "cpu", "feedback": {"enabled": True}, "feedbackPath": str(work / "feedback.jsonl")}))
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "tauon_runtime", "serve", "--config", str(work / "serve.json")],
                                stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_url(f"{base}/v2/health/ready", 120, proc)
            rng = np.random.default_rng(0)
            for _ in range(200):  # enough random inputs to be predicted as many classes
                answer = post(f"{base}/v1/predict", {"instances": [rng.integers(0, 256, 64).tolist()]})
                if answer and rng.random() < 0.2:
                    p = answer["predictions"][0]
                    post(f"{base}/v1/feedback", {"predictionId": p["predictionId"],
                                                 "label": p["label"] if rng.random() < 0.5 else "0"})
            x = rng.random((4, 1, 8, 8)).astype("float32")
            post(f"{base}/v2/models/bench/infer", {"inputs": [{"name": "input", "shape": [4, 1, 8, 8],
                                                               "datatype": "FP32", "data": x.ravel().tolist()}]})
            post(f"{base}/v1/predict", {"instances": [[1, 2, 3]]})  # 400
            for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                urllib.request.urlopen(f"{base}{path}", timeout=10).read()
            text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        finally:
            terminate([proc], grace=20, group=False)
    families = {f.name: len(f.samples) for f in text_string_to_metric_families(text) if f.name.startswith("tauon_")}
    return sum(families.values()), families


def main() -> None:
    started = time.monotonic()
    result: dict[str, object] = {}
    for label, kind, status in (("trainingjob", "TrainingJob", RUN),
                                ("modeldeployment", "ModelDeployment", SERVING),
                                ("modeldeployment_canary", "ModelDeployment", CANARY)):
        per = {n: operator_series(kind, status, n) / n for n in (1, 100, 1000)}
        print(f"operator series per {label:<24} {per[1]:.0f}  (per resource at 100: {per[100]:.0f}, at 1000: {per[1000]:.0f})")
        result[f"{label}_series"] = int(per[1])
        result[f"{label}_series_bounded"] = len(set(per.values())) == 1
    total, families = serving_series()
    print(f"series of one serving pod's /metrics after mixed traffic: {total}")
    for name, n in sorted(families.items()):
        print(f"  {name:<44} {n}")
    result["serving_pod_series"] = total
    result["serving_pod_predictions_series"] = families.get("tauon_serve_predictions", 0)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
