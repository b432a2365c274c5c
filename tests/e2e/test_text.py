"""examples/text for real on the local platform: the generated reviews prepare with a tokenizer
trained on their train split, an LSTM and a Transformer train in their pods to the gates the
example states, and the served LSTM classifies raw text: JSON on /v1/predict and OIP v2 BYTES
from tritonclient (binary tensors, as it sends them by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kubetest import condition, post_json as post, remove, status_of, wait_for, wait_phase
from localplatform import ready_endpoints

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NS = "default"
REVIEWS = ["the food was not bad", "honestly the service was really rude",
           "the room was boring but the view was amazing", "the price was not fantastic"]
TRUTH = ["positive", "negative", "positive", "negative"]


@pytest.fixture(scope="module")
def reviews(platform):
    platform.kubectl("apply", "-n", NS, "-f", str(REPO / "examples" / "text"))
    wait_phase(platform, "tds", "reviews", NS, "Ready", timeout=300)
    yield platform
    remove(platform, NS, str(REPO / "examples" / "text"))


def test_an_lstm_and_a_transformer_train_to_the_examples_gates(reviews):
    for name, gate in (("reviews-lstm", 0.95), ("reviews-transformer", 0.9)):
        wait_for(lambda n=name: status_of(reviews, "tj", n, NS).get("phase") in ("Succeeded", "Failed"),
                 timeout=600, interval=1, what=f"{name} finished")
        tj = status_of(reviews, "tj", name, NS)
        assert tj["phase"] == "Succeeded", condition(tj, "Ready")
        assert tj["model"]["metrics"]["accuracy"] >= gate


def test_the_served_model_classifies_raw_text(reviews):
    import tritonclient.http as triton

    md = wait_phase(reviews, "mdep", "reviews", NS, "Ready", timeout=600)
    assert md["modelDigest"] == status_of(reviews, "tj", "reviews-lstm", NS)["model"]["sha256"]
    [endpoint] = ready_endpoints(reviews, NS, "reviews")
    status, body = post(f"http://{endpoint}/v1/predict", {"text": REVIEWS})
    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] == TRUTH

    client = triton.InferenceServerClient(endpoint)
    meta = client.get_model_metadata("reviews")
    assert meta["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
    inp = triton.InferInput("input", [len(REVIEWS)], "BYTES")
    inp.set_data_from_numpy(np.array([r.encode() for r in REVIEWS], dtype=object))
    result = client.infer("reviews", [inp], outputs=[triton.InferRequestedOutput("labels")])
    assert [v.decode() for v in result.as_numpy("labels")] == TRUTH
    client.close()

    status, body = post(f"http://{endpoint}/v1/predict", {"instances": [[0.5] * 3]})
    assert status == 400, body
