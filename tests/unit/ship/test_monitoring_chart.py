"""The chart's monitoring, rendered without a cluster: one value turns on the ServiceMonitor,
PodMonitor, PrometheusRule and dashboard ConfigMap; each is valid against prometheus-operator's
CRD schema (or Kubernetes' own); the PodMonitor selects the pods the operator really builds;
every alert names its resource and has a runbook; the docs list every panel's query."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from monitoring import (
    DASHBOARD, DOCS, MONITORING_KINDS, alerts, by_kind, crd_schema, dashboard, dashboard_queries,
    rendered, unknown_fields,
)
from operator_rbac import render
from tauon_operator.builders import modeldeployment
from tauon_operator.builders.modeldeployment import ResolvedModel
from tauon_operator.settings import Settings

KUBERNETES = "1.37.0"
VARIANTS = {
    "defaults": {},
    "namespaces-and-labels": {
        "watchNamespaces": ["team-a", "team-b"],
        "monitoring": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                       "prometheusRule": {"additionalLabels": {"team": "ml-platform"}},
                       "dashboard": {"namespace": "grafana", "annotations": {"grafana_folder": "Tauon"}}},
    },
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def docs(request) -> list[dict]:
    return rendered(VARIANTS[request.param])


def dashboard_configmap(docs: list[dict]) -> dict:
    [cm] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    return cm


def test_one_value_renders_every_monitoring_object():
    kinds = [d["kind"] for d in rendered()]
    assert all(kinds.count(k) == 1 for k in MONITORING_KINDS), kinds
    assert dashboard_configmap(rendered())
    off = render()
    assert not {d["kind"] for d in off} & set(MONITORING_KINDS)
    assert not [d for d in by_kind(off, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def test_each_part_can_be_left_out():
    docs = rendered({"monitoring": {"enabled": True, "podMonitor": {"enabled": False},
                                    "prometheusRule": {"enabled": False},
                                    "dashboard": {"enabled": False}}})
    assert [d["kind"] for d in docs if d["kind"] in MONITORING_KINDS] == ["ServiceMonitor"]
    assert not by_kind(docs, "ConfigMap")


@pytest.mark.parametrize("kind", MONITORING_KINDS)
def test_monitoring_objects_are_valid_against_prometheus_operator_schemas(docs, kind):
    [obj] = by_kind(docs, kind)
    schema = crd_schema(kind)
    jsonschema.Draft7Validator(schema).validate(obj)
    assert list(unknown_fields(obj, schema)) == []


def test_the_schema_check_would_catch_a_mistake():
    [monitor] = by_kind(rendered(), "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    assert list(unknown_fields(monitor, crd_schema("PodMonitor"))) == [
        ".spec.podMetricsEndpoints[0].intervall"]
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "thirty seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(crd_schema("PodMonitor")).validate(monitor)


def test_the_dashboard_configmap_is_what_grafanas_sidecar_loads(docs):
    import kubernetes_validate

    cm = dashboard_configmap(docs)
    kubernetes_validate.validate(cm, KUBERNETES, strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tauon.json"]) == json.loads(DASHBOARD.read_text())


def test_the_monitors_label_for_the_selecting_prometheus():
    docs = rendered(VARIANTS["namespaces-and-labels"])
    for kind in MONITORING_KINDS:
        [obj] = by_kind(docs, kind)
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    [monitor] = by_kind(docs, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert dashboard_configmap(docs)["metadata"]["namespace"] == "grafana"
    assert all(a["labels"]["team"] == "ml-platform" for a in alerts(VARIANTS["namespaces-and-labels"]))


def test_the_servicemonitor_scrapes_the_metrics_service_and_keeps_resource_labels():
    docs = rendered()
    [monitor] = by_kind(docs, "ServiceMonitor")
    [svc] = by_kind(docs, "Service")
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]]
    assert endpoint["honorLabels"] is True  # the series' namespace is the resource's
    # The old switch alone still renders it.
    assert by_kind(render(values={"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")


def selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In"
        ok = ok and labels.get(e["key"]) in e["values"]
    return ok


def test_the_podmonitor_selects_the_serving_pods_the_operator_builds():
    md = {"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 1},
          "spec": {"model": {"trainingJobRef": {"name": "v1"}},
                   "canary": {"model": {"trainingJobRef": {"name": "v2"}}, "trafficPercent": 25}}}
    settings = Settings()
    children = modeldeployment.build(md, settings, ResolvedModel("c1", "model", "a" * 64),
                                     ResolvedModel("c2", "model", "b" * 64))
    [monitor] = by_kind(rendered(), "PodMonitor")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    relabeled = {r["targetLabel"]: r["sourceLabels"][0] for r in endpoint["relabelings"]}
    pods = [d["spec"]["template"] for d in children if d["kind"] == "Deployment"]
    assert len(pods) == 2
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert selects(monitor["spec"]["selector"], labels), labels
        [container] = pod["spec"]["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}[endpoint["port"]]
        # The relabelled pod labels exist: `name` is the ModelDeployment, `track` its track.
        meta = {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
                for k, v in labels.items()}
        assert meta[relabeled["name"]] == "digits"
        assert meta[relabeled["track"]] in ("stable", "canary")
        # The plain annotations say the same, for a Prometheus without the operator.
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == endpoint["path"]


def test_the_operator_pod_carries_the_plain_prometheus_annotations():
    def annotations(values):
        [deployment] = by_kind(render(values=values), "Deployment")
        return deployment["spec"]["template"]["metadata"].get("annotations") or {}

    assert annotations({}) == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000",
                               "prometheus.io/path": "/metrics"}
    assert annotations({"metrics": {"podAnnotations": False}}) == {}
    assert annotations({"metrics": {"enabled": False}}) == {}
    assert annotations({"operator": {"podAnnotations": {"a": "b", "prometheus.io/scrape": "false"}}})[
        "prometheus.io/scrape"] == "false"  # the user's own annotations win


# ------------------------------------------------------------------------------ alerts
def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_every_alert_names_its_resource_and_has_a_runbook_section():
    found = alerts()
    assert len(found) >= 8
    sections = anchors(DOCS.read_text())
    for alert in found:
        name, notes = alert["alert"], alert["annotations"]
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert notes["summary"] and notes["description"], name
        who = "{{ $labels.namespace }}/{{ $labels.name }}"
        assert who in notes["description"] or "$labels.job" in notes["description"], name
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url.endswith("docs/monitoring.md") and anchor == name.lower(), name
        assert anchor in sections, f"docs/monitoring.md has no section {name}"


def test_alerts_cover_what_a_platform_team_pages_on():
    names = {a["alert"] for a in alerts()}
    assert {"TauonTrainingJobFailed", "TauonTrainingJobNoProgress", "TauonModelDeploymentNotReady",
            "TauonServingErrorRateHigh", "TauonServingLatencyHigh", "TauonFeedbackAccuracyLow",
            "TauonOperatorReconcileErrors", "TauonOperatorQueueBacklog"} <= names


def test_thresholds_come_from_values():
    rule = {"trainingNoProgressFor": "2h", "deploymentNotReadyFor": "5m", "servingErrorRatio": 0.01,
            "servingLatencyP99Seconds": 0.25, "queueDepth": 7}
    found = {a["alert"]: a for a in alerts({"monitoring": {"enabled": True, "prometheusRule": rule}})}
    assert "> 7200" in found["TauonTrainingJobNoProgress"]["expr"]
    assert found["TauonModelDeploymentNotReady"]["for"] == "5m"
    assert found["TauonServingErrorRateHigh"]["expr"].rstrip().endswith("> 0.01")
    assert found["TauonServingLatencyHigh"]["expr"].rstrip().endswith("> 0.25")
    assert found["TauonOperatorQueueBacklog"]["expr"].endswith("> 7")


def test_no_operator_down_alert_for_zero_replicas():
    names = {a["alert"] for a in alerts({"operator": {"replicas": 0}})}
    assert "TauonOperatorDown" not in names and "TauonOperatorReconcileErrors" in names


# ------------------------------------------------------------------------------ dashboard
def test_the_dashboard_has_the_panels_the_issue_lists():
    titles = {p["title"] for p in dashboard()["panels"]}
    assert {"Runs in progress", "Loss of runs in progress", "Accuracy of runs in progress",
            "Request rate", "Latency p50 / p99", "Error rate (5xx share)", "Batch size (mean)",
            "Queue depth", "Feedback accuracy (1h)", "Reconcile rate", "Reconcile errors",
            "Work queue"} <= titles
    for p in dashboard()["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]


def test_dashboard_queries_use_only_variables_grafana_defines():
    assert len(dashboard_queries()) >= 25  # promql() raises on any other `$variable`


def test_the_docs_list_every_panel_with_its_queries():
    text = DOCS.read_text().replace("\\|", "|")
    for p in dashboard()["panels"]:
        if p["type"] == "row":
            assert f"### {p['title']}" in text
            continue
        row = next((line for line in text.splitlines() if line.startswith(f"| {p['title']} |")), None)
        assert row, f"docs/monitoring.md does not list the panel {p['title']!r}"
        for target in p["targets"]:
            assert f"`{target['expr']}`" in row, (p["title"], target["expr"])
