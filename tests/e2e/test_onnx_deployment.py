"""The edge through the operator: a ModelDeployment with `format: onnx` serves the digits
TrainingJob's ONNX export beside the PyTorch deployment of the same model, and both answer the
held-out digits alike."""

from __future__ import annotations

import json

import pytest
from test_loop import NS, digits, held_out, post  # noqa: F401 (the module's fixture)

from kubetest import remove, status_of, wait_phase
from localplatform import ready_endpoints

pytestmark = pytest.mark.cluster

EDGE = {
    "apiVersion": "tauon.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "digits-edge"},
    "spec": {"model": {"trainingJobRef": {"name": "digits-cnn"}, "format": "onnx"},
             "replicas": 1, "resources": {"cpu": "250m", "memory": "256Mi"}},
}


def test_an_onnx_deployment_answers_like_the_torch_one(digits):  # noqa: F811
    digits.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(EDGE))
    tj = status_of(digits, "tj", "digits-cnn", NS)
    edge = wait_phase(digits, "mdep", "digits-edge", NS, "Ready", timeout=300)
    torch_md = wait_phase(digits, "mdep", "digits", NS, "Ready", timeout=300)
    assert edge["modelDigest"] == torch_md["modelDigest"] == tj["model"]["sha256"]

    deployment = json.loads(digits.kubectl("get", "deployment", "digits-edge", "-n", NS, "-o", "json").stdout)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "tauon-runtime-edge" in container["image"]
    config = json.loads(digits.kubectl("get", "configmap", "digits-edge-serving", "-n", NS, "-o", "json").stdout)
    assert json.loads(next(iter(config["data"].values())))["modelFormat"] == "onnx"

    test, classes = held_out(digits)
    x = test["x"].astype("float32")
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    answers = {}
    for name in ("digits-edge", "digits"):
        [endpoint] = ready_endpoints(digits, NS, name)
        out = post(f"http://{endpoint}/v2/models/{name}/infer", body)
        answers[name] = next(o for o in out["outputs"] if o["name"] == "labels")["data"]
    same = sum(a == b for a, b in zip(answers["digits-edge"], answers["digits"], strict=True))
    assert same >= 0.999 * len(x), f"{same}/{len(x)} of the test split predicted alike"
    right = sum(label == classes[int(y)] for label, y in zip(answers["digits-edge"], test["y"], strict=True))
    assert right / len(x) == pytest.approx(tj["model"]["metrics"]["accuracy"], abs=1e-6)
    remove(digits, NS, "mdep/digits-edge")  # its server would hold CPU the next module trains with
