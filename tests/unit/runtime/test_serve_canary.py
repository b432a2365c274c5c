"""The exact canary split: a real stable server forwards exactly its canary share to a real
canary server, relays its answers, and serves the request itself when the canary is gone."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from test_serve import MODEL, config, digits, metric, model_dir  # noqa: F401
from test_serve_hostile import running

from kubetest import post_json
from localkube.procutil import free_port
from tauon_runtime.serve.canary import ExactShare

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("percent, calls, taken", [
    (20, 500, 100), (20, 5, 1), (20, 4, 0), (10, 1000, 100), (33, 300, 99), (0, 50, 0),
    (100, 50, 50), (12.5, 800, 100),
])
def test_the_share_is_exact_and_spread(percent, calls, taken):
    share = ExactShare(percent)
    picks = [share.take() for _ in range(calls)]
    assert sum(picks) == taken
    if 0 < percent < 100 and taken > 1:  # evenly: never two in a row below 50 %
        assert not any(a and b for a, b in zip(picks, picks[1:], strict=False))


def post(port: int, path: str, body: dict) -> tuple[int, dict]:
    return post_json(f"http://127.0.0.1:{port}{path}", body)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_the_stable_server_sends_exactly_the_canary_share_and_survives_a_dead_canary(model_dir):  # noqa: F811
    x = {"instances": np.random.default_rng(0).integers(0, 256, (1, 1, 8, 8)).tolist()}
    infer = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
    canary_cfg = config(model_dir, host="127.0.0.1", port=free_port(), drainSeconds=0)
    with running(canary_cfg) as canary:
        stable_cfg = config(model_dir, host="127.0.0.1", port=free_port(), drainSeconds=0,
                            canary={"url": f"http://127.0.0.1:{canary.port}", "trafficPercent": 20})
        with running(stable_cfg) as stable:
            for i in range(500):
                path, body = ("/v1/predict", x) if i % 2 else (f"/v2/models/{MODEL}/infer", infer)
                status, answer = post(stable.port, path, body)
                assert status == 200, answer
            # A bad request forwarded gets the canary's own 4xx, relayed as it is.
            bad = [post(stable.port, "/v1/predict", {"instances": "nope"}) for _ in range(5)]
            assert all(s == 400 and "instances" in a["error"] for s, a in bad)
            on_canary = metrics(canary.port)
            served = sum(metric(on_canary, "tauon_serve_requests_total", route=r)
                         for r in ("/v1/predict", "/v2/models/{name}/infer"))
            assert served == 101  # 20 % of 505, each one where it was sent
            on_stable = metrics(stable.port)
            assert metric(on_stable, "tauon_serve_canary_forwarded_total", outcome="ok") == 101
            assert sum(metric(on_stable, "tauon_serve_requests_total", route=r)
                       for r in ("/v1/predict", "/v2/models/{name}/infer")) == 404
            # Feedback, health and metadata are never forwarded.
            assert metric(on_canary, "tauon_serve_requests_total", route="/v2/health/ready") >= 1
            assert metric(on_canary, "tauon_serve_requests_total", route="/v1/feedback") == 0

        # The canary gone: every request is still answered, the canary's share here.
        stable_cfg = config(model_dir, host="127.0.0.1", port=free_port(), drainSeconds=0,
                            canary={"url": f"http://127.0.0.1:{free_port()}", "trafficPercent": 50})
        with running(stable_cfg) as stable:
            assert all(post(stable.port, "/v1/predict", x)[0] == 200 for _ in range(20))
            on_stable = metrics(stable.port)
            assert metric(on_stable, "tauon_serve_canary_forwarded_total", outcome="fallback") == 10
            assert metric(on_stable, "tauon_serve_requests_total", route="/v1/predict") == 20
