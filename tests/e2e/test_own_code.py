"""A team's own training code on the local platform, applied as a user would (`kubectl apply -k`
of the shipped examples): the RL example's PPO policy is solved on CartPole and its served
policy balances the pole; the GAN example's DCGAN is gated on its Inception Score and its served
generator draws digits over /v1 and OIP v2 (tritonclient). Code that fails, never reports, or
misses its own gate is told as such in the TrainingJob's status; code on two processes runs
under torchrun."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from kubetest import condition, post_json as post, remove, status_of, wait_for, wait_phase
from localplatform import ready_endpoints

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NS = "default"


def finished(cluster, name: str, timeout: float = 420) -> dict:
    wait_for(lambda: status_of(cluster, "tj", name, NS).get("phase") in ("Succeeded", "Failed"),
             timeout=timeout, interval=1, what=f"{name} finished")
    return status_of(cluster, "tj", name, NS)


def example(platform, name: str):
    platform.kubectl("apply", "-n", NS, "-k", str(REPO / "examples" / name))
    yield platform
    remove(platform, NS, str(REPO / "examples" / name))


@pytest.fixture(scope="module")
def rl(platform):
    yield from example(platform, "rl")


@pytest.fixture(scope="module")
def gan(platform, rl):  # after the RL example: one trainer at a time on the node agent's CPUs
    remove(rl, NS, str(REPO / "examples" / "rl"))
    yield from example(platform, "gan")


def test_rl_policy_is_solved_and_its_return_is_in_status(rl):
    tj = finished(rl, "cartpole")
    assert tj["phase"] == "Succeeded", condition(tj, "Ready")
    assert tj["model"]["metrics"]["meanReturn"] >= 195
    assert tj["model"]["location"].startswith("s3://")
    history = tj["metrics"]["history"]  # one entry per PPO update, as train.py reported them
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert {"meanReturn", "loss"} <= set(history[-1])
    assert tj["latestCheckpoint"].startswith("s3://")


def test_the_served_policy_balances_the_pole(rl):
    import gymnasium as gym
    import tritonclient.http as triton

    md = wait_phase(rl, "mdep", "cartpole", NS, "Ready", timeout=300)
    assert md["modelDigest"] == status_of(rl, "tj", "cartpole", NS)["model"]["sha256"]
    [endpoint] = ready_endpoints(rl, NS, "cartpole")
    env, returns = gym.make("CartPole-v1"), []
    for episode in range(3):  # every action is the server's answer to one request
        obs, _ = env.reset(seed=20_000 + episode)
        total, over = 0.0, False
        while not over:
            status, body = post(f"http://{endpoint}/v1/predict", {"instances": [obs.tolist()]})
            assert status == 200, body
            obs, reward, terminated, truncated, _ = env.step(body["predictions"][0]["output"])
            total, over = total + float(reward), terminated or truncated
        returns.append(total)
    assert np.mean(returns) >= 195, returns

    client = triton.InferenceServerClient(endpoint)
    inp = triton.InferInput("observation", [2, 4], "FP32")
    inp.set_data_from_numpy(np.array([[0, 0, 0.1, 0.5], [0, 0, -0.1, -0.5]], dtype=np.float32))
    result = client.infer("cartpole", [inp])
    assert result.as_numpy("output").tolist() == [1, 0]  # push towards the falling pole
    client.close()
    status, body = post(f"http://{endpoint}/v1/predict", {"instances": [[0.0, 1.0]]})
    assert status == 400 and "observation of 4 finite numbers" in body["error"]


def test_gan_is_gated_on_its_inception_score_and_draws_digits(gan):
    import tritonclient.http as triton

    tj = finished(gan, "gan")
    assert tj["phase"] == "Succeeded", condition(tj, "Ready")
    metrics = tj["model"]["metrics"]
    assert metrics["inceptionScore"] >= 5 and metrics["classifierAccuracy"] >= 0.9
    assert tj["progress"]["epoch"] == 50 and tj["progress"]["percent"] == 100
    wait_phase(gan, "mdep", "gan", NS, "Ready", timeout=300)
    [endpoint] = ready_endpoints(gan, NS, "gan")
    status, body = post(f"http://{endpoint}/v1/predict", json.loads((REPO / "examples/gan/request.json").read_text()))
    assert status == 200, body
    first, second = (p["output"] for p in body["predictions"])
    assert first["seed"] == 7 and np.array(first["pixels"]).shape == (8, 8)
    assert first["pixels"] != second["pixels"] and np.array(first["pixels"]).max() > 128

    client = triton.InferenceServerClient(endpoint)
    inp = triton.InferInput("seed", [2], "INT64")
    inp.set_data_from_numpy(np.array([7, 8], dtype=np.int64))
    images = client.infer("gan", [inp]).as_numpy("output")
    assert images.shape == (2, 1, 8, 8) and images.dtype == np.uint8
    assert images[0, 0].tolist() == first["pixels"]  # a seed always draws the same digit
    client.close()
    status, body = post(f"http://{endpoint}/v1/predict", {"instances": [{"seed": 1}, {"seed": "x"}]})
    assert status == 400 and "instance 1" in body["error"]


# --- code that goes wrong ----------------------------------------------------------------------

FAILING = '''
print("loading the data")
print("step 12: loss nan")
raise RuntimeError("the loss went to nan at step 12")
'''
SILENT = "import time\ntime.sleep(12)\n"
TWO_PROCESSES = '''
import torch
import torch.distributed as dist
from tauon_runtime import sdk

dist.init_process_group("gloo")  # torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR ...
with sdk.run() as run:
    total = torch.tensor([float(run.rank + 1)])
    dist.all_reduce(total)
    run.report(epoch=1, total_epochs=1, metrics={"rankSum": total.item()})
    run.export(torch.nn.Linear(1, 1), metrics={"rankSum": total.item(), "worldSize": float(run.world_size)})
dist.destroy_process_group()
'''
BELOW_GATE = '''
import torch
from tauon_runtime import sdk

with sdk.run() as run:
    run.export(torch.nn.Linear(2, 1), metrics={"reward": 3.0})
'''


def own_job(cluster, name: str, source: str, **spec) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-code"},
          "data": {"train.py": source}}
    tj = {"apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
          "spec": {"command": ["python", "train.py"], "code": {"configMap": {"name": f"{name}-code"}},
                   "backoffLimit": 0, "resources": {"cpu": "250m", "memory": "1Gi"}, **spec}}
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                    "items": [cm, tj]}))


@pytest.fixture(scope="module")
def wrong(platform, gan):
    remove(gan, NS, str(REPO / "examples" / "gan"))
    own_job(platform, "own-failing", FAILING)
    own_job(platform, "own-silent", SILENT)
    own_job(platform, "own-below-gate", BELOW_GATE, evaluation={"metric": "reward", "minimum": 10})
    own_job(platform, "own-ddp", TWO_PROCESSES, processesPerWorker=2, hyperparameters={"batchSize": 2})
    yield platform
    for name in ("own-failing", "own-silent", "own-below-gate", "own-ddp"):
        remove(platform, NS, f"tj/{name}", f"configmap/{name}-code")


def test_code_that_fails_has_its_last_log_lines_in_the_condition(wrong):
    tj = finished(wrong, "own-failing")
    assert tj["phase"] == "Failed"
    ready = condition(tj, "Ready")
    assert ready["reason"] == "BackoffLimitExceeded"
    assert "RuntimeError: the loss went to nan at step 12" in ready["message"]
    assert "step 12: loss nan" in ready["message"]


def test_code_that_never_reports_has_no_made_up_progress(wrong):
    st = wait_phase(wrong, "tj", "own-silent", NS, "Running", timeout=180)
    seen = []
    while st.get("phase") == "Running":
        seen.append((st.get("progress"), condition(st, "Ready").get("message")))
        time.sleep(1)
        st = status_of(wrong, "tj", "own-silent", NS)
    assert seen and all(progress is None and "%" not in msg for progress, msg in seen), seen
    tj = finished(wrong, "own-silent")
    assert tj["phase"] == "Succeeded" and "model" not in tj, tj


def test_code_below_its_own_gate_is_rejected(wrong):
    tj = finished(wrong, "own-below-gate")
    assert tj["phase"] == "Failed"
    ready = condition(tj, "Ready")
    assert ready["reason"] == "BelowEvaluationGate"
    assert "reward 3.0000 is below evaluation.minimum 10" in ready["message"]
    assert "model" not in tj


def test_own_code_on_two_processes_runs_under_torchrun(wrong):
    tj = finished(wrong, "own-ddp")
    assert tj["phase"] == "Succeeded", condition(tj, "Ready")
    assert tj["model"]["metrics"] == {"rankSum": 3.0, "worldSize": 2.0}  # both ranks took part
    assert tj["metrics"]["history"] == [{"epoch": 1.0, "rankSum": 3.0}]  # rank 0 reported, once
