"""The install and GitOps docs: their manifests parse and point at the chart, and they say how
to remove what Helm leaves behind (the CRDs)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CRDS = ("datasets.tauon.dev", "trainingjobs.tauon.dev", "modeldeployments.tauon.dev")


def yaml_blocks(path: Path) -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)
    return [d for b in blocks for d in yaml.safe_load_all(b) if d]


def test_gitops_manifests_parse_and_use_the_chart():
    docs = yaml_blocks(ROOT / "docs" / "gitops.md")
    kinds = {d.get("kind") for d in docs}
    assert {"Application", "HelmRelease", "GitRepository", "Kustomization"} <= kinds
    [platform] = [d for d in docs if d.get("kind") == "Application" and d["metadata"]["name"] == "tauon"]
    assert platform["spec"]["source"]["path"] == "charts/tauon"
    assert (ROOT / platform["spec"]["source"]["path"] / "Chart.yaml").exists()
    [release] = [d for d in docs if d.get("kind") == "HelmRelease"]
    assert (ROOT / release["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").exists()
    assert release["spec"]["install"]["crds"] == "Create"


def test_install_doc_says_how_to_remove_the_crds():
    text = (ROOT / "docs" / "install.md").read_text()
    line = next(l for l in text.splitlines() if l.startswith("kubectl delete crd"))
    assert all(name in line for name in CRDS)
    for command in ("helm install", "helm upgrade", "helm uninstall"):
        assert command in text


def test_edge_doc_manifest_is_a_valid_onnx_deployment():
    from tauon_operator.api import ModelDeployment

    [md] = yaml_blocks(ROOT / "docs" / "edge.md")
    spec = ModelDeployment.parse_spec(md)
    assert spec.model.format == "onnx" and spec.resources.gpus == 0
