"""The runtime writes parts of its custom resource's status (progress, metrics, the digest):
every patch it can produce must pass the CRD's status schema on the real API server."""

from __future__ import annotations

import json

import pytest

from kubetest import get_json
from tauon_runtime.data.prepare import status_patch as prepare_patch
from tauon_operator.builders.access import runtime_access, service_account_name
from tauon_runtime.report import Reporter, StatusReporter
from tauon_runtime.train.loop import status_patch as train_patch

pytestmark = pytest.mark.cluster

EPOCH = {"epoch": 3, "totalEpochs": 15, "step": 132, "totalSteps": 660, "percent": 20.0,
         "etaSeconds": 41.7, "metrics": {"loss": 0.31, "accuracy": 0.93, "f1": 0.92, "trainLoss": 0.4},
         "best": {"loss": 0.31, "accuracy": 0.93, "f1": 0.92, "trainLoss": 0.4}}
TRAIN_EVENTS = [
    ("start", {"epoch": 0, "totalEpochs": 15, "step": 0, "totalSteps": 660, "percent": 0.0,
               "etaSeconds": None}),
    ("epoch", EPOCH),
    ("checkpoint", {"path": "/output/checkpoints/step-00000132.pt", "epoch": 3, "step": 132}),
    ("exported", {"location": "/output/model", "sha256": "c" * 64,
                  "metrics": {"accuracy": 0.98, "loss": 0.05, "f1": 0.98}}),
    ("finished", {**EPOCH, "epoch": 15, "step": 660, "percent": 100.0, "etaSeconds": 0.0}),
]


def patch_status(cluster, namespace, kind, name, patch):
    return cluster.kubectl("patch", kind, name, "-n", namespace, "--subresource=status",
                           "--type=merge", "-p", json.dumps(patch), check=False)


def test_every_training_status_patch_is_accepted(cluster, crds, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t"},
        "spec": {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"}}}))
    for event, fields in TRAIN_EVENTS:
        patch = train_patch(event, fields)
        res = patch_status(cluster, namespace, "tj", "t", patch)
        assert res.returncode == 0, f"{event}: {res.stderr}"
    status = get_json(cluster, "tj", "t", "-n", namespace)["status"]
    assert status["progress"]["epoch"] == 15 and status["progress"]["etaSeconds"] == 0
    assert status["model"]["sha256"] == "c" * 64
    assert status["latestCheckpoint"].endswith("step-00000132.pt")


def test_the_prepare_status_patch_is_accepted(cluster, crds, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "tauon.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "d"},
        "spec": {"source": {"builtin": {"name": "digits"}}}}))
    patch = prepare_patch("finished", {"digest": "a" * 64, "counts": {"train": 1439, "validation": 179,
                                                                       "test": 179},
                                       "classes": [str(i) for i in range(10)], "bytes": 123456})
    res = patch_status(cluster, namespace, "tds", "d", patch)
    assert res.returncode == 0, res.stderr
    assert get_json(cluster, "tds", "d", "-n", namespace)["status"]["counts"]["train"] == 1439


def test_the_runtime_reports_with_its_own_narrow_identity(cluster, crds, namespace, tmp_path):
    """The runtime's StatusReporter, authenticated as the ServiceAccount the operator gives
    it, over real HTTPS: every throttled, merged patch lands; other objects stay out of reach."""
    tj = {"apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob",
          "metadata": {"name": "r", "namespace": namespace},
          "spec": {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(tj))
    tj = get_json(cluster, "tj", "r", "-n", namespace)
    identity = runtime_access(tj, "trainingjobs")
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in identity))
    token = cluster.kubectl("create", "token", service_account_name(tj), "-n", namespace).stdout.strip()
    (tmp_path / "token").write_text(token)

    def reporter(name):
        return StatusReporter(f"tauon.dev/v1alpha1/namespaces/{namespace}/trainingjobs/{name}",
                              cluster.server, token_path=tmp_path / "token",
                              ca_path=cluster.pki / "ca.crt", interval=0.2, log=lambda m: None)

    status = reporter("r")
    with open("/dev/null", "w") as sink:
        events = Reporter(stream=sink, status=status, status_for=train_patch)
        for event, fields in TRAIN_EVENTS:
            events.event(event, **fields)
        events.close()
    assert status.sent >= 1 and status.failures == 0
    assert get_json(cluster, "tj", "r", "-n", namespace)["status"]["progress"]["percent"] == 100.0

    # The same token cannot touch another TrainingJob's status.
    cluster.kubectl("apply", "-f", "-", input=json.dumps({**tj, "metadata": {"name": "other",
                                                                             "namespace": namespace}}))
    other = reporter("other")
    other.patch({"status": {"progress": {"percent": 1.0}}}, final=True)
    other.close()  # the patch goes from a background thread: wait for its answer
    assert other.failures == 1 and other.sent == 0
