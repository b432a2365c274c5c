"""A real Prometheus (built from the Go module proxy, hack/build-prometheus.sh) on loopback,
scraping the local platform's operator and a serving pod while a small digits run trains and
serves, with the chart's rules loaded: the training series move to Succeeded with the test
accuracy, the deployment's request rate rises above zero, every PromQL expression of the rules
and the dashboard runs without error, and a deleted resource's series go.

The local platform's Services have no endpoints (pods have loopback addresses), so the serving
pod is found the way the PodMonitor would find it and handed to Prometheus by file-based
service discovery, with the labels the PodMonitor gives it (`namespace`, `name`, `track`, `pod`).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from kubetest import get_json, status_of, wait_for, wait_phase
from localplatform import grant_store
from localkube.procutil import free_port
from monitoring import dashboard_queries, prometheus, rule_groups, write_rule_file

pytestmark = pytest.mark.cluster
GROUP = "tauon.dev/v1alpha1"
TJ, MD = "prom-digits", "prom-digits"


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def api(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422: a bad query, with Prometheus's reason
            return json.loads(e.read())

    def query(self, expr: str) -> list[dict]:
        body = self.api("query", query=expr)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prom(platform, platform_metrics_port, tmp_path_factory):
    """Prometheus scraping the operator every second (honor_labels, as the ServiceMonitor) and
    the serving pods listed in targets/*.json, evaluating the chart's rules every second."""
    home = tmp_path_factory.mktemp("prometheus")
    write_rule_file(home / "rules.yaml")
    (home / "targets").mkdir()
    port = free_port()
    (home / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {"job_name": "tauon-metrics", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{platform_metrics_port}"],
                                 "labels": {"namespace": "tauon-system"}}]},
            {"job_name": "tauon-inference",
             "file_sd_configs": [{"files": [str(home / "targets" / "*.json")], "refresh_interval": "1s"}]},
        ],
    }))
    log = home / "prometheus.log"
    proc = subprocess.Popen(
        [prometheus(), f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    p = Prometheus(f"http://127.0.0.1:{port}", proc, log)

    def ready():
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{p.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, timeout=60, interval=0.5, what="Prometheus ready")
    yield p
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def serving_targets(cluster, namespace: str, name: str) -> list[dict]:
    """The ready serving pods of a ModelDeployment as file_sd groups, labelled as the chart's
    PodMonitor labels them."""
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"tauon.dev/modeldeployment={name}")["items"]
    groups = []
    for pod in pods:
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        if not ready or not pod["status"].get("podIP"):
            continue
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        labels = pod["metadata"]["labels"]
        groups.append({"targets": [f"{pod['status']['podIP']}:{annotations['prometheus.io/port']}"],
                       "labels": {"namespace": namespace, "name": labels["tauon.dev/modeldeployment"],
                                  "track": labels["tauon.dev/track"], "pod": pod["metadata"]["name"]}})
    return groups


@pytest.fixture(scope="module")
def loop(platform, prom):
    """A digits Dataset, a three-epoch run and a ModelDeployment of its model, in a namespace of
    their own, created while Prometheus scrapes."""
    ns = f"prometheus-{uuid.uuid4().hex[:6]}"
    platform.kubectl("create", "namespace", ns)
    wait_for(lambda: platform.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
             what=f"default ServiceAccount in {ns}")
    grant_store(platform, ns)  # the platform publishes datasets and models to its S3 store
    objects = [
        {"apiVersion": GROUP, "kind": "Dataset", "metadata": {"name": "digits"},
         "spec": {"source": {"builtin": {"name": "digits"}}}},
        {"apiVersion": GROUP, "kind": "TrainingJob", "metadata": {"name": TJ},
         "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "cnn"},
                  "hyperparameters": {"epochs": 3, "batchSize": 32, "optimizer": "adam",
                                      "learningRate": 0.002, "seed": 3},
                  "resources": {"cpu": "1", "memory": "1Gi"}}},
        {"apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": MD},
         "spec": {"model": {"trainingJobRef": {"name": TJ}}, "replicas": 1,
                  "feedback": {"enabled": True}}},
    ]
    platform.kubectl("apply", "-n", ns, "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))
    started = time.monotonic()
    wait_phase(platform, "tj", TJ, ns, "Succeeded", timeout=420)
    wait_phase(platform, "mdep", MD, ns, "Ready", timeout=300)
    print(f"digits run trained and served in {time.monotonic() - started:.0f} s")
    targets = wait_for(lambda: serving_targets(platform, ns, MD), what="a ready serving pod")
    (Path(prom.log).parent / "targets" / f"{ns}.json").write_text(json.dumps(targets))
    yield ns
    platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_training_series_move_to_succeeded_with_the_test_accuracy(platform, prom, loop):
    who = f'namespace="{loop}", name="{TJ}"'
    wait_for(lambda: prom.value(f'tauon_trainingjob_phase{{{who}, phase="Succeeded"}}') == 1,
             timeout=30, what="the Succeeded phase in Prometheus")
    # Scraped while it ran, not only once it was over.
    assert prom.value(f'max_over_time(tauon_trainingjob_phase{{{who}, phase="Running"}}[30m])') == 1
    assert prom.value(f'min_over_time(tauon_trainingjob_progress_ratio{{{who}}}[30m])') < 1
    tj = status_of(platform, "tj", TJ, loop)
    accuracy = prom.value(f'tauon_trainingjob_model_metric{{{who}, metric="accuracy"}}')
    assert accuracy == pytest.approx(tj["model"]["metrics"]["accuracy"])
    assert prom.value(f"tauon_trainingjob_epoch{{{who}}}") == 3
    assert prom.value(f"tauon_trainingjob_progress_ratio{{{who}}}") == 1
    series = prom.value(f'count({{job="tauon-metrics", {who}, __name__=~"tauon_trainingjob_.*"}})')
    print(f"series of one TrainingJob: {series:.0f}")
    assert series <= 23  # one per phase (Queued came with Kueue), plus the gauges


def test_the_deployment_request_rate_rises_above_zero(platform, prom, loop):
    [target] = json.loads((Path(prom.log).parent / "targets" / f"{loop}.json").read_text())
    endpoint = target["targets"][0]
    wait_for(lambda: prom.value(f'up{{job="tauon-inference", namespace="{loop}"}}') == 1,
             timeout=30, what="the serving pod scraped")
    with urllib.request.urlopen(f"http://{endpoint}/v2/models/{MD}", timeout=10) as r:
        _, c, h, w = json.loads(r.read())["inputs"][0]["shape"]
    for i in range(30):
        answer = post(f"http://{endpoint}/v1/predict", {"instances": [[0.5] * (c * h * w)]})
        if i % 10 == 0:
            prediction = answer["predictions"][0]
            post(f"http://{endpoint}/v1/feedback",
                 {"predictionId": prediction["predictionId"], "label": prediction["label"]})
        time.sleep(0.1)
    who = f'namespace="{loop}", name="{MD}"'
    rate = wait_for(lambda: prom.value(
        f'sum(rate(tauon_serve_requests_total{{{who}, route="/v1/predict"}}[30s])) > 0'),
        timeout=30, what="a request rate above zero")
    assert rate > 0
    md = status_of(platform, "mdep", MD, loop)
    assert prom.value(f'tauon_modeldeployment_phase{{{who}, phase="Ready"}}') == 1
    assert prom.value(f'tauon_modeldeployment_model_info{{{who}, track="stable", digest="{md["modelDigest"]}"}}') == 1
    # The operator's digest and the pod's own say the same.
    assert prom.value(f'tauon_serve_model_info{{{who}, digest="{md["modelDigest"]}"}}') == 1
    graded = wait_for(lambda: prom.value(f"namespace_name:tauon_serve_feedback_graded:increase1h{{{who}}}"),
                      timeout=30, what="graded feedback recorded")
    assert graded > 0
    accuracy = prom.value(f"namespace_name:tauon_serve_feedback_accuracy:ratio1h{{{who}}}")
    assert accuracy == 1  # every feedback above confirmed its prediction
    series = prom.value(f'count({{job="tauon-metrics", {who}, __name__=~"tauon_modeldeployment_.*"}})')
    per_pod = prom.value(f'count({{job="tauon-inference", {who}}})')
    print(f"series of one ModelDeployment: {series:.0f} from the operator, {per_pod:.0f} from its pod")
    assert series <= 10


def test_every_rule_and_dashboard_query_runs(prom, loop):
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]] + [q for _, q in dashboard_queries()]
    with_data = 0
    for expr in exprs:
        body = prom.api("query", query=expr)
        assert body["status"] == "success", (expr, body.get("error"))
        with_data += bool(body["data"]["result"])
    print(f"{len(exprs)} expressions ran, {with_data} returned data")
    assert with_data >= 10  # the run and the traffic above give them something to show

    def evaluated():
        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") and r["health"] for r in rules) else None

    rules = wait_for(evaluated, timeout=30, what="every rule evaluated")
    assert len(rules) == sum(len(g["rules"]) for g in rule_groups())
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_a_deleted_resource_takes_its_series_with_it(platform, prom, loop):
    who = f'namespace="{loop}", name="{TJ}"'
    assert prom.query(f"tauon_trainingjob_phase{{{who}}}")
    platform.kubectl("delete", "tj", TJ, "-n", loop)
    wait_for(lambda: not prom.query(f"tauon_trainingjob_phase{{{who}}}"), timeout=30,
             what="the deleted TrainingJob's series gone")
