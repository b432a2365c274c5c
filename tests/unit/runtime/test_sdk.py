"""tauon_runtime.sdk, the platform around a team's own code: progress and metrics as the
TrainingJob's status sees them, checkpoints that a second start resumes, the evaluation gate
and its exit code, the exported model and its termination-log result, weights loaded verified."""

from __future__ import annotations

import io
import json

import pytest
import torch

from tauon_runtime import sdk
from tauon_runtime.modelfiles import ModelIntegrityError
from tauon_runtime.report import Reporter
from tauon_runtime.train.loop import status_patch


class Recorded:
    """Where the status patches go (a StatusReporter's place)."""

    def __init__(self):
        self.patches: list[dict] = []

    def patch(self, body, final=False):
        self.patches.append(body["status"])

    def close(self, timeout=None):
        return True


@pytest.fixture
def config(tmp_path, monkeypatch):
    def write(**fields):
        cfg = {"datasetDir": str(tmp_path / "data"), "outputDir": str(tmp_path / "out"), **fields}
        monkeypatch.setenv("TAUON_RUN_CONFIG_JSON", json.dumps(cfg))
        monkeypatch.setenv("TAUON_TERMINATION_LOG", str(tmp_path / "termination-log"))
        return tmp_path

    for var in ("RANK", "WORLD_SIZE", "TAUON_STATUS_TARGET", "TAUON_STORE_BUCKET"):
        monkeypatch.delenv(var, raising=False)
    return write


def a_run(cfg_dir) -> tuple[sdk.Run, Recorded, io.StringIO]:
    from tauon_runtime.config import TrainConfig, load_config
    from tauon_runtime.train.distributed import DistEnv

    status, log = Recorded(), io.StringIO()
    reporter = Reporter(stream=log, status=status, status_for=status_patch)  # type: ignore[arg-type]
    return sdk.Run(load_config(TrainConfig, None), DistEnv(), reporter), status, log


def test_report_fills_progress_metrics_and_history(config):
    run, status, _ = a_run(config())
    run.report(epoch=1, total_epochs=4, metrics={"meanReturn": 20.5})
    run.report(epoch=2, total_epochs=4, metrics={"meanReturn": 60})
    progress = [p["progress"] for p in status.patches if "progress" in p]
    assert [p["percent"] for p in progress] == [25.0, 50.0]
    assert "etaSeconds" not in progress[0] and progress[1]["etaSeconds"] >= 0  # a rate needs two
    latest = [p["metrics"]["latest"] for p in status.patches if "latest" in p.get("metrics", {})]
    assert latest[-1] == {"meanReturn": 60.0}
    history = [p["metrics"]["history"] for p in status.patches if "history" in p.get("metrics", {})]
    assert history[-1] == [{"epoch": 1.0, "meanReturn": 20.5}, {"epoch": 2.0, "meanReturn": 60.0}]


def test_a_report_without_a_total_claims_no_percent(config):
    run, status, _ = a_run(config())
    run.report(step=10, metrics={"loss": 0.3})
    assert all("percent" not in p.get("progress", {}) for p in status.patches)
    assert {"step": 10} in [p.get("progress") for p in status.patches]


def test_a_second_start_resumes_the_checkpoint_and_its_history(config):
    cfg = config()
    first, _, _ = a_run(cfg)
    assert first.resume() is None
    first.report(epoch=1, total_epochs=2, metrics={"loss": 1.0})
    first.checkpoint({"epoch": 1, "weights": torch.ones(3)}, step=1)
    again, status, _ = a_run(cfg)
    saved = again.resume()
    assert saved is not None and saved["epoch"] == 1 and saved["weights"].tolist() == [1, 1, 1]
    again.report(epoch=2, total_epochs=2, metrics={"loss": 0.5})
    history = [p["metrics"]["history"] for p in status.patches if "history" in p.get("metrics", {})]
    assert [h["epoch"] for h in history[-1]] == [1.0, 2.0]


def test_export_writes_a_verified_model_and_the_result_the_operator_reads(config):
    cfg = config(evaluation={"metric": "meanReturn", "minimum": 195}, output={"modelName": "cartpole"})
    net = torch.nn.Linear(4, 2)
    with sdk.run() as run:
        model = run.export(net, metrics={"meanReturn": 480}, card={"environment": "CartPole-v1"})
    result = json.loads((cfg / "termination-log").read_text())
    assert result["event"] == "finished" and result["result"] == "succeeded"
    assert result["model"] == model and model["metrics"] == {"meanReturn": 480.0}
    card, weights = sdk.load_weights(cfg / "out" / "model", model["sha256"])
    assert card["task"] == "custom" and card["environment"] == "CartPole-v1" and card["name"] == "cartpole"
    assert torch.equal(weights["weight"], net.weight.detach())
    with pytest.raises(ModelIntegrityError):
        sdk.load_weights(cfg / "out" / "model", "0" * 64)


def test_a_model_below_its_gate_exits_3_and_is_not_written(config):
    cfg = config(evaluation={"metric": "meanReturn", "minimum": 195})
    with pytest.raises(SystemExit) as exited, sdk.run() as run:
        run.export(torch.nn.Linear(4, 2), metrics={"meanReturn": 120})
    assert exited.value.code == 3
    result = json.loads((cfg / "termination-log").read_text())
    assert result["result"] == "rejected"
    assert "meanReturn 120.0000 is below evaluation.minimum 195" in result["message"]
    assert not (cfg / "out" / "model").exists()


def test_a_gate_on_a_metric_the_code_never_gives_is_an_error_naming_it(config):
    config(evaluation={"metric": "meanReturn", "minimum": 195})
    with pytest.raises(ValueError, match="'meanReturn' is not among the metrics given \\(reward\\)"):
        with sdk.run() as run:
            run.export(torch.nn.Linear(4, 2), metrics={"reward": 1.0})


def test_a_failure_in_the_code_is_not_swallowed_and_writes_no_result(config):
    cfg = config()
    with pytest.raises(RuntimeError, match="nan"), sdk.run():
        raise RuntimeError("loss is nan")
    # no JSON result: the kubelet falls back to the log's last lines (the traceback)
    assert not (cfg / "termination-log").exists()


def test_other_ranks_neither_report_nor_export(config, monkeypatch):
    cfg = config()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with sdk.run() as run:
        assert not run.is_main and run.world_size == 2
        run.report(epoch=1, total_epochs=1, metrics={"loss": 1.0})
        assert run.checkpoint({"x": 1}, step=1) is None
        assert run.export(torch.nn.Linear(1, 1), metrics={"loss": 1.0}) is None
    assert not (cfg / "out").exists() and not (cfg / "termination-log").exists()
