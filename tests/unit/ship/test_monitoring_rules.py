"""The chart's alert and recording rules under promtool (built from the Go module proxy, cached
by hack/build-prometheus.sh): they check, every alert fires on its case and stays quiet on the
case beside it (monitoring_rules_test.yaml), and every dashboard query parses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring import alerts, dashboard_queries, promtool, write_query_rule_file, write_rule_file

HERE = Path(__file__).resolve().parent
UNIT_TESTS = HERE / "monitoring_rules_test.yaml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("values", [
    {},
    {"monitoring": {"enabled": True, "prometheusRule": {
        "trainingNoProgressFor": "2h", "deploymentNotReadyFor": "90s", "servingErrorRatio": 0.2,
        "servingLatencyP99Seconds": 0.05, "feedbackMinRecords": 1, "queueDepth": 5,
        "additionalLabels": {"team": "ml"}}}},
], ids=["defaults", "tuned"])
def test_promtool_checks_the_rules(tmp_path, values):
    rules = write_rule_file(tmp_path / "rules.yaml", values)
    out = run("check", "rules", "--lint=all", "--lint-fatal", str(rules))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_every_alert(tmp_path):
    write_rule_file(tmp_path / "rules.yaml")
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    out = run("test", "rules", str(tmp_path / UNIT_TESTS.name))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        name = alert["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never tested quiet"


def test_every_dashboard_query_parses(tmp_path):
    queries = [q for _, q in dashboard_queries()]
    out = run("check", "rules", str(write_query_rule_file(tmp_path / "queries.yaml", queries)))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_query_would_be_caught(tmp_path):
    out = run("check", "rules", str(write_query_rule_file(tmp_path / "q.yaml", ["sum by (x (up)"])))
    assert out.returncode != 0
