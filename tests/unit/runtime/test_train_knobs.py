"""The training knobs users bring from timm and torchvision: learning-rate warm-up, label
smoothing, gradient clipping, gradient accumulation; each proven at unit speed, then end to end."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import ValidationError
from runtime_testlib import digits_train_config, events
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tauon_runtime.config import TrainConfig
from tauon_runtime.contract import Hyperparameters
from tauon_runtime.models import build_model
from tauon_runtime.report import Reporter
from tauon_runtime.train import train
from tauon_runtime.train.distributed import DistEnv
from tauon_runtime.train.loop import set_up
from tauon_runtime.train.optim import build_optimizer, build_scheduler
from tauon_runtime.train.step import OptimizerStep

torch.set_num_threads(2)


def hyper(**fields) -> Hyperparameters:
    return Hyperparameters.model_validate(fields)


def lrs(hp: Hyperparameters, steps_per_epoch: int) -> list[float]:
    """The learning rate of every optimizer step of the run."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=hp.learning_rate)
    schedule = build_scheduler(opt, hp, steps_per_epoch)
    seen = []
    for _ in range(hp.epochs * steps_per_epoch):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return seen


def make_step(
    model: nn.Module,
    *,
    lr: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    net: nn.Module | None = None,
    **knobs,
) -> OptimizerStep:
    opt = build_optimizer(model, hyper(optimizer=optimizer, learningRate=lr, momentum=momentum))
    return OptimizerStep(
        net or model,
        opt,
        torch.optim.lr_scheduler.ConstantLR(opt, 1.0, total_iters=0),
        scaler or torch.amp.GradScaler("cpu", enabled=False),
        **knobs,
    )


def grad_norm(model: nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", 10, 1, 8, {"dropout": 0.0})


def batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


# --- warm-up -------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_warmup_ramps_linearly_then_the_schedule_runs_over_the_rest(schedule: str) -> None:
    hp = hyper(epochs=5, warmupEpochs=2, learningRate=0.1, schedule=schedule)
    seen = lrs(hp, steps_per_epoch=4)  # 8 warm-up steps, 12 scheduled ones
    # From 1 % of the rate, in equal steps, to the full rate at the end of the warm-up.
    assert seen[:9] == pytest.approx([0.1 * (0.01 + 0.99 * t / 8) for t in range(9)])
    main = {
        "constant": [0.1] * 12,
        "cosine": [0.1 * (1 + math.cos(math.pi * k / 12)) / 2 for k in range(12)],
        "step": [0.1] * 4 + [0.01] * 4 + [0.001] * 4,  # /10 at a third and two thirds of the 12
    }[schedule]
    assert seen[8:] == pytest.approx(main)


def test_no_warmup_keeps_the_schedule_as_it_was() -> None:
    assert lrs(hyper(epochs=2, learningRate=0.1, schedule="cosine"), 4) == pytest.approx(
        [0.1 * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(8)]
    )
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert isinstance(
        build_scheduler(opt, hyper(epochs=2), 4), torch.optim.lr_scheduler.CosineAnnealingLR
    )


def test_warmup_resumes_where_the_checkpoint_left_it() -> None:
    hp = hyper(epochs=4, warmupEpochs=1, learningRate=0.1)
    expected = lrs(hp, steps_per_epoch=5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    first = build_scheduler(opt, hp, 5)
    for _ in range(3):  # killed in the warm-up
        opt.step()
        first.step()
    again_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    again = build_scheduler(again_opt, hp, 5)
    again_opt.load_state_dict(opt.state_dict())
    again.load_state_dict(first.state_dict())
    rest = []
    for _ in range(17):
        rest.append(again_opt.param_groups[0]["lr"])
        again_opt.step()
        again.step()
    assert rest == pytest.approx(expected[3:])


def test_warmup_limits() -> None:
    with pytest.raises(ValidationError, match="less than epochs"):
        hyper(epochs=3, warmupEpochs=3)
    with pytest.raises(ValidationError, match="onecycle"):
        hyper(schedule="onecycle", warmupEpochs=1)
    hyper(epochs=3, warmupEpochs=2)


# --- label smoothing -----------------------------------------------------------------------------


def test_label_smoothing_mixes_the_target_with_the_uniform_distribution() -> None:
    model = mlp()
    x, y = batch(16)
    plain, smoothed = make_step(model), make_step(model, label_smoothing=0.2)
    with torch.no_grad():
        logp = F.log_softmax(model(x), dim=1)
        nll, uniform = -logp.gather(1, y[:, None]).mean(), -logp.mean()
        assert plain.loss(x, y).item() == F.cross_entropy(model(x), y).item()
        assert smoothed.loss(x, y).item() == pytest.approx(
            (0.8 * nll + 0.2 * uniform).item(), rel=1e-6
        )
    # A confident, correct prediction is no longer (almost) free: the target keeps some doubt.
    confident = nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        confident.weight.copy_(torch.tensor([[20.0], [0.0], [0.0]]))
    one, label = torch.ones(1, 1), torch.tensor([0])
    assert make_step(confident).loss(one, label).item() < 1e-6
    assert make_step(confident, label_smoothing=0.1).loss(one, label).item() > 1.0


def test_the_step_trains_on_the_smoothed_loss() -> None:
    x, y = batch(16)
    loss_sums = []
    for smoothing in (0.0, 0.3):
        loss_sum = torch.zeros((), dtype=torch.float64)
        make_step(mlp(), label_smoothing=smoothing)(x, y, loss_sum)
        loss_sums.append(loss_sum.item() / 16)
    model = mlp()
    with torch.no_grad():
        expected = [F.cross_entropy(model(x), y, label_smoothing=s).item() for s in (0.0, 0.3)]
    assert loss_sums == pytest.approx(expected, rel=1e-6) and expected[0] != expected[1]


# --- gradient clipping ---------------------------------------------------------------------------


def steep_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch(16)
    return x * 100, y  # gradients far above any sensible bound


def test_clipping_bounds_the_global_grad_norm() -> None:
    x, y = steep_batch()
    free = mlp()
    make_step(free)(x, y, torch.zeros((), dtype=torch.float64))
    assert grad_norm(free) > 10
    clipped = mlp()
    make_step(clipped, clip_norm=1.0)(x, y, torch.zeros((), dtype=torch.float64))
    assert grad_norm(clipped) == pytest.approx(1.0, rel=1e-4)  # the step left the clipped grads
    small = mlp()
    make_step(small, clip_norm=1e4)(x, y, torch.zeros((), dtype=torch.float64))
    assert grad_norm(small) == pytest.approx(
        grad_norm(free), rel=1e-5
    )  # under the bound: untouched


def test_clipping_unscales_the_fp16_loss_scaling_first() -> None:
    """With GradScaler the gradients are loss-scaled (here by 2**12): clipping them as they are
    would bound the scaled norm and shrink the update 4096-fold. The step unscales first."""
    x, y = steep_batch()
    reference = mlp()
    make_step(reference, clip_norm=1.0)(x, y, torch.zeros((), dtype=torch.float64))
    scaled = mlp()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    make_step(scaled, clip_norm=1.0, scaler=scaler)(x, y, torch.zeros((), dtype=torch.float64))
    assert scaler.get_scale() == 2.0**12  # no inf: the step was taken, not skipped
    assert grad_norm(scaled) == pytest.approx(1.0, rel=1e-4)
    for a, b in zip(scaled.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clip_limits() -> None:
    for bad in (
        {"gradClipNorm": 0},
        {"labelSmoothing": 1.0},
        {"labelSmoothing": -0.1},
        {"gradAccumulationSteps": 0},
    ):
        with pytest.raises(ValidationError):
            hyper(**bad)
    assert hyper().grad_clip_norm is None and hyper().grad_accumulation_steps == 1


# --- gradient accumulation -----------------------------------------------------------------------


@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.9), ("adamw", 0.0)])
@pytest.mark.parametrize("n, size", [(4, 32), (4, 30)])  # 30: micro-batches of 8, 8, 7, 7
def test_accumulating_n_micro_batches_is_one_step_on_the_whole_batch(
    optimizer, momentum, n, size
) -> None:
    whole, accumulated = mlp(), mlp()
    one = make_step(whole, optimizer=optimizer, momentum=momentum, lr=0.01)
    many = make_step(accumulated, optimizer=optimizer, momentum=momentum, lr=0.01, accumulation=n)
    sums = [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
    for seed in range(3):  # a few steps: the optimizer's state must agree too
        x, y = batch(size, seed)
        one(x, y, sums[0])
        many(x, y, sums[1])
    assert sums[1].item() == pytest.approx(sums[0].item(), rel=1e-6)
    # Summing in another order rounds differently. SGD's update is proportional to the gradient,
    # so that stays at float32 noise; Adam's divides by the gradient's own size, which magnifies
    # the noise of near-zero gradients: there, agree to 1 % of one update (lr).
    atol = 1e-6 if optimizer == "sgd" else 1e-4
    for a, b in zip(accumulated.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)


def test_ddp_exchanges_gradients_once_per_step(tmp_path: Path) -> None:
    """With DDP every micro-batch but the last runs under no_sync(): one all-reduce per step."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp_model, plain = mlp(), mlp()
        ddp = DistributedDataParallel(ddp_model)
        exchanges = []

        def count(_, bucket):
            exchanges.append(bucket.index())
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        ddp.register_comm_hook(None, count)
        step = make_step(ddp_model, net=ddp, accumulation=4)
        reference = make_step(plain, accumulation=4)
        for seed in range(2):
            x, y = batch(32, seed)
            step(x, y, torch.zeros((), dtype=torch.float64))
            reference(x, y, torch.zeros((), dtype=torch.float64))
        buckets = len(set(exchanges))
        assert len(exchanges) == 2 * buckets  # not 2 x 4 x buckets
        for a, b in zip(ddp_model.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(a, b)
    finally:
        dist.destroy_process_group()


# --- the contract, and the loop end to end -------------------------------------------------------


def test_batch_size_must_divide_by_processes_and_accumulation(tmp_path: Path) -> None:
    from tauon_operator.api import crdgen
    from tauon_operator.api.trainingjob import TrainingJobSpec

    def spec(**fields) -> dict:
        return {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"}, **fields}

    TrainingJobSpec.model_validate(
        spec(workers=2, hyperparameters={"batchSize": 64, "gradAccumulationSteps": 4})
    )
    with pytest.raises(ValidationError, match="gradAccumulationSteps"):
        TrainingJobSpec.model_validate(
            spec(workers=2, hyperparameters={"batchSize": 64, "gradAccumulationSteps": 64})
        )
    rules = [
        (r.get("fieldPath"), r["rule"])  # the API server's side of the same rules
        for r in crdgen.structural(TrainingJobSpec)["x-kubernetes-validations"]
    ]
    assert any(
        path == ".hyperparameters.batchSize" and "gradAccumulationSteps" in rule
        for path, rule in rules
    )
    warmup = [rule for path, rule in rules if path == ".hyperparameters.warmupEpochs"]
    assert len(warmup) == 2
    assert "self.hyperparameters.warmupEpochs < self.hyperparameters.epochs" in warmup[0]
    assert warmup[1] == (
        "self.hyperparameters.schedule != 'onecycle' || self.hyperparameters.warmupEpochs == 0"
    )
    cfg = TrainConfig.model_validate(
        digits_train_config(
            tmp_path, tmp_path, hyperparameters={"batchSize": 60, "gradAccumulationSteps": 8}
        )
    )
    with pytest.raises(ValueError, match="must divide evenly"):
        set_up(cfg, DistEnv(), torch.device("cpu"))


def _epochs(cfg: dict) -> tuple[dict, list[dict]]:
    out = io.StringIO()
    result = train(TrainConfig.model_validate(cfg), Reporter(stream=out))
    return result, [e for e in events(out.getvalue()) if e["event"] == "epoch"]


def test_accumulation_follows_the_loss_trajectory_of_the_whole_batch(
    digits_dir: Path, tmp_path: Path
) -> None:
    recipe = {
        "model": {"architecture": "mlp", "options": {"dropout": 0.0}},
        "hyperparameters": {"epochs": 3, "optimizer": "sgd", "learningRate": 0.05},
    }
    whole, whole_epochs = _epochs(digits_train_config(digits_dir, tmp_path / "whole", **recipe))
    recipe["hyperparameters"]["gradAccumulationSteps"] = 4  # micro-batches of 16
    accumulated, acc_epochs = _epochs(digits_train_config(digits_dir, tmp_path / "acc", **recipe))
    assert accumulated["step"] == whole["step"] == 3 * 22  # the same optimizer steps
    for a, b in zip(acc_epochs, whole_epochs, strict=True):
        assert a["metrics"]["trainLoss"] == pytest.approx(b["metrics"]["trainLoss"], rel=1e-4)
        assert a["metrics"]["loss"] == pytest.approx(b["metrics"]["loss"], rel=1e-4)


def test_all_knobs_together_train_and_are_recorded(digits_dir: Path, tmp_path: Path) -> None:
    knobs = {
        "warmupEpochs": 1,
        "labelSmoothing": 0.1,
        "gradClipNorm": 1.0,
        "gradAccumulationSteps": 2,
    }
    result, epochs = _epochs(
        digits_train_config(digits_dir, tmp_path, hyperparameters={"epochs": 4, **knobs})
    )
    assert result["metrics"]["accuracy"] >= 0.8
    assert epochs[-1]["metrics"]["trainLoss"] < epochs[0]["metrics"]["trainLoss"]
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert knobs.items() <= card["training"]["hyperparameters"].items()


def test_data_in_memory_is_batched_there_in_the_samplers_order():
    """No DataLoader when the split fits: the same batches the sampler gives, in its order, a
    resumed epoch skipping what it trained on, each batch a copy (normalised in place later)."""
    from tauon_runtime.data.dataset import Split
    from tauon_runtime.train.loop import DeviceBatches
    from tauon_runtime.train.sampler import EpochBatchSampler

    split = Split(torch.arange(40, dtype=torch.float32).view(10, 4, 1, 1), torch.arange(10))
    sampler = EpochBatchSampler(10, 3, 0, 1, seed=7)
    batches = DeviceBatches(split, sampler, torch.device("cpu"))
    sampler.set_epoch(2)
    got = [y.tolist() for _, y in batches]
    assert got == list(sampler) and len(got) == len(batches) == 3
    sampler.set_epoch(2, skip=1)
    assert [y.tolist() for _, y in batches] == got[1:]
    x, _ = next(iter(batches))
    x.mul_(0)
    assert split.x.abs().sum() > 0  # the split itself is untouched
