"""`tauon-runtime train` on the bundled digits: accuracy, DDP, kill-and-resume, stopping, export."""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import pytest
import torch

from tauon_runtime.config import TrainConfig
from tauon_runtime.data import PreparedDataset
from tauon_runtime.models import load_exported, normalize_input
from tauon_runtime.report import Reporter
from tauon_runtime.train import ModelRejected, train
from tauon_runtime.train.checkpoint import Checkpointer
from tauon_runtime.train.sampler import EpochBatchSampler
from runtime_testlib import digits_train_config, events, free_port, run_cli, write_config
from test_report import TARGET, FakeApiServer

torch.set_num_threads(2)


def _train(cfg: dict) -> tuple[dict, list[dict]]:
    out = io.StringIO()
    result = train(TrainConfig.model_validate(cfg), Reporter(stream=out))
    return result, events(out.getvalue())


def test_seed_cnn_on_digits_reaches_95_percent(digits_dir: Path, tmp_path: Path) -> None:
    result, log = _train(digits_train_config(digits_dir, tmp_path))
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    print("single-process test metrics:", card["metrics"])
    assert card["metrics"]["accuracy"] >= 0.95
    assert (result["epoch"], result["step"]) == (15, 15 * 22)  # 1439 samples // 64 = 22 steps an epoch
    assert card["datasetDigest"] == PreparedDataset(digits_dir).digest
    assert card["inputShape"] == [1, 8, 8] and card["classes"] == [str(i) for i in range(10)]

    # The exported model, loaded as serve loads it, really classifies the held-out digits.
    model, card = load_exported(tmp_path / "model", expected_sha256=result["model"]["sha256"])
    test = PreparedDataset(digits_dir).split("test")
    with torch.inference_mode():
        predicted = model(normalize_input(test.x, card)).argmax(1)
    assert (predicted == test.y).float().mean().item() == pytest.approx(card["metrics"]["accuracy"], abs=1e-6)

    kinds = [e["event"] for e in log]
    assert kinds[0] == "start" and kinds[-3:] == ["evaluation", "exported", "finished"]
    epochs = [e for e in log if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 16))
    assert {"epoch", "step", "totalSteps", "percent", "etaSeconds", "metrics"} <= epochs[0].keys()
    assert epochs[-1]["percent"] == 100.0
    assert len(Checkpointer(tmp_path / "checkpoints", 3).all()) == 3  # keepLast


def test_sampler_shards_instead_of_repeating() -> None:
    n, world, batch = 103, 2, 8
    ranks = [EpochBatchSampler(n, batch, rank=r, world_size=world, seed=5) for r in range(world)]
    for s in ranks:
        s.set_epoch(3)
    shards = [[i for b in s for i in b] for s in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 51 // batch  # same step count on every rank
    assert not set(shards[0]) & set(shards[1])  # disjoint
    assert len(shards[0]) + len(shards[1]) >= n - world * batch  # covers all but the dropped tails
    ranks[0].set_epoch(4)
    assert [i for b in ranks[0] for i in b] != shards[0]  # reshuffled every epoch
    ranks[0].set_epoch(3, skip=2)
    assert [i for b in ranks[0] for i in b] == shards[0][2 * batch:]  # resume mid-epoch


def _result(proc) -> dict:
    finished = [e for e in events(proc.stdout) if e["event"] == "finished"]
    assert proc.returncode == 0 and len(finished) == 1, proc.stderr[-3000:]
    return finished[0]


def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(digits_dir: Path, tmp_path: Path) -> None:
    recipe = {"hyperparameters": {"epochs": 3}, "checkpoint": {"everySteps": 10, "everyEpochs": 1, "keepLast": 2}}
    reference = write_config(tmp_path / "ref.json", digits_train_config(digits_dir, tmp_path / "ref", **recipe))
    resumed = write_config(tmp_path / "run.json", digits_train_config(digits_dir, tmp_path / "run", **recipe))

    # Killed with SIGKILL at step 35: inside epoch 2 (steps 23..44), after the step-30 checkpoint.
    killed = run_cli(["train", "--config", str(resumed)], env={"TAUON_TEST_KILL_AT_STEP": "35"})
    assert killed.returncode == -signal.SIGKILL
    assert Checkpointer(tmp_path / "run" / "checkpoints", 2).latest().name == "step-00000030.pt"
    assert not (tmp_path / "run" / "model").exists()

    again = run_cli(["train", "--config", str(resumed)])
    log = events(again.stdout)
    resume = next(e for e in log if e["event"] == "resumed")
    assert (resume["epoch"], resume["step"]) == (1, 30)  # epoch index 1 = the second epoch
    after, before = _result(again), _result(run_cli(["train", "--config", str(reference)]))
    assert (after["epoch"], after["step"]) == (before["epoch"], before["step"]) == (3, 66)
    # Same data order, RNG and optimizer state: the same model, bit for bit.
    assert after["metrics"] == before["metrics"]
    assert after["model"]["sha256"] == before["model"]["sha256"]


def test_ddp_two_processes_matches_single_process_quality(digits_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ddp.json", digits_train_config(digits_dir, tmp_path / "ddp"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "tauon_runtime"]
    proc = run_cli(["train", "--config", str(cfg)], launcher=torchrun, timeout=600)
    result = _result(proc)  # exactly one "finished": only rank 0 reports
    start = next(e for e in events(proc.stdout) if e["event"] == "start")
    assert start["worldSize"] == 2
    # batchSize is global: each process takes 32 of the 64, so the step count is unchanged.
    assert (result["epoch"], result["step"]) == (15, 330)
    card = json.loads((tmp_path / "ddp" / "model" / "model.json").read_text())
    print("DDP (2 processes, gloo) test metrics:", card["metrics"])
    assert card["metrics"]["accuracy"] >= 0.95 and card["training"]["worldSize"] == 2


def test_early_stopping(digits_dir: Path, tmp_path: Path) -> None:
    # No later epoch can beat the first by 1.0 accuracy: stop after `patience` more epochs.
    cfg = digits_train_config(digits_dir, tmp_path,
                              earlyStopping={"metric": "accuracy", "patience": 2, "minDelta": 1.0})
    result, log = _train(cfg)
    assert result["stoppedEarly"] and result["epoch"] == 3 and result["step"] == 66
    assert any(e["event"] == "early_stopped" for e in log)
    assert (tmp_path / "model" / "model.json").exists()


def test_precision_layout_and_optimizer_knobs_with_status_patches(
        digits_dir: Path, tmp_path: Path, monkeypatch) -> None:
    api = FakeApiServer()
    monkeypatch.setenv("TAUON_STATUS_TARGET", TARGET)
    monkeypatch.setenv("TAUON_STATUS_API_URL", api.url)
    monkeypatch.setenv("TAUON_SERVICEACCOUNT_DIR", str(tmp_path))
    cfg = digits_train_config(
        digits_dir, tmp_path / "out", precision="bf16", channelsLast=True,
        model={"architecture": "resnet18"},
        hyperparameters={"epochs": 1, "optimizer": "sgd", "schedule": "onecycle", "learningRate": 0.05,
                         "weightDecay": 5e-4},
        dataLoader={"numWorkers": 1})
    try:
        result = train(TrainConfig.model_validate(cfg))  # the default reporter: stdout + status
    finally:
        api.close()
    assert result["step"] == 22 and 0 <= result["metrics"]["loss"] < 10
    status = [r["body"]["status"] for r in api.requests]
    assert all(r["headers"]["Content-Type"] == "application/merge-patch+json" for r in api.requests)
    model_patch = next(s["model"] for s in status if "model" in s)
    assert model_patch["sha256"] == result["model"]["sha256"]
    assert status[-1]["progress"]["percent"] == 100.0
    assert any("latestCheckpoint" in s for s in status) and any("metrics" in s for s in status)


def test_rejected_model_exits_3_without_export(digits_dir: Path, tmp_path: Path) -> None:
    cfg = digits_train_config(digits_dir, tmp_path / "out", hyperparameters={"epochs": 1},
                              evaluation={"metric": "accuracy", "minimum": 0.999})
    with pytest.raises(ModelRejected, match="below evaluation.minimum 0.999"):
        _train(cfg)
    assert not (tmp_path / "out" / "model").exists()

    term = tmp_path / "termination-log"
    proc = run_cli(["train", "--config", str(write_config(tmp_path / "c.json", cfg))],
                   env={"TAUON_TERMINATION_LOG": str(term)})
    assert proc.returncode == 3 and "model rejected" in proc.stderr
    assert json.loads(term.read_text())["result"] == "rejected"


def test_bad_config_and_missing_dataset_exit_codes(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.json", {"datasetDir": "/d", "outputDir": "/o", "precision": "fp8"})
    proc = run_cli(["train", "--config", str(bad)])
    assert proc.returncode == 2 and "precision:" in proc.stderr
    missing = write_config(tmp_path / "m.json", {"model": {"architecture": "cnn"}, "datasetDir": str(tmp_path / "none"),
                                                    "outputDir": str(tmp_path)})
    proc = run_cli(["train", "--config", str(missing)])
    assert proc.returncode == 1 and "not a prepared dataset manifest" in proc.stderr


@pytest.mark.parametrize("command", ["prepare", "train", "serve"])
def test_help(command: str) -> None:
    proc = run_cli([command, "--help"])
    assert proc.returncode == 0 and "--config" in proc.stdout
