"""The chart's monitoring objects, and the tools that prove them: promtool, Prometheus and
prometheus-operator's CRD schemas, built and cached by hack/build-prometheus.sh (the first
call on a machine builds, about five minutes; later ones return at once)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from operator_rbac import CHART, REPO, render

MONITORING_ON = {"monitoring": {"enabled": True}}
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
DASHBOARD = CHART / "dashboards" / "tauon.json"
DOCS = REPO / "docs" / "monitoring.md"
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*"}


@functools.cache
def prometheus_home() -> Path:
    """The cache directory holding bin/prometheus, bin/promtool and crds/."""
    out = subprocess.run([str(REPO / "hack" / "build-prometheus.sh")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def promtool() -> str:
    return str(prometheus_home() / "bin" / "promtool")


def prometheus() -> str:
    return str(prometheus_home() / "bin" / "prometheus")


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema prometheus-operator serves for a kind (monitoring.coreos.com/v1)."""
    plural = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors",
              "PrometheusRule": "prometheusrules"}[kind]
    crd = yaml.safe_load((prometheus_home() / "crds" / f"monitoring.coreos.com_{plural}.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Fields the schema does not know (the API server would prune them silently): the strict
    half of a validation that a JSON-schema validator alone does not do for CRD schemas."""
    if isinstance(obj, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        for key, value in obj.items():
            if key in schema["properties"]:
                yield from unknown_fields(value, schema["properties"][key], f"{path}.{key}")
            elif not schema.get("additionalProperties"):
                yield f"{path}.{key}"
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            yield from unknown_fields(item, schema["items"], f"{path}[{i}]")


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    """The operator's objects of a kind (not the console's)."""
    return [d for d in docs if d["kind"] == kind
            and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "console"]


def rendered(values: dict | None = None, release: str = "tauon") -> list[dict]:
    """The chart with monitoring on (and `values`): rendered once per values, a fresh copy
    every call (tests may change what they get)."""
    return json.loads(_rendered(json.dumps({**MONITORING_ON, **(values or {})}, sort_keys=True), release))


@functools.cache
def _rendered(values: str, release: str) -> str:
    return json.dumps(render(release=release, values=json.loads(values)))


def rule_groups(values: dict | None = None) -> list[dict]:
    [rule] = by_kind(rendered(values), "PrometheusRule")
    return rule["spec"]["groups"]


def alerts(values: dict | None = None) -> list[dict]:
    return [r for g in rule_groups(values) for r in g["rules"] if "alert" in r]


def write_rule_file(path: Path, values: dict | None = None) -> Path:
    """The PrometheusRule's groups as the plain rule file Prometheus and promtool read."""
    path.write_text(yaml.safe_dump({"groups": rule_groups(values)}, sort_keys=False))
    return path


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL as Grafana sends it) of every query of the dashboard."""
    return [(p["title"], promql(t["expr"])) for p in dashboard()["panels"]
            for t in p.get("targets", [])]


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if leftover := re.findall(r"\$\w+", expr):
        raise ValueError(f"unknown Grafana variables {leftover} in {expr!r}")
    return expr


def write_query_rule_file(path: Path, queries: list[str]) -> Path:
    """Queries as recording rules: `promtool check rules` then parses each one offline."""
    rules = [{"record": f"tauon_check:query_{i}", "expr": q} for i, q in enumerate(queries)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    return path
