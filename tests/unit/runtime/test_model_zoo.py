"""The model zoo, and exported models that refuse to load when tampered with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tauon_runtime.contract.train import TASK_ARCHITECTURES, TEXT_ARCHITECTURES
from tauon_runtime.models import (
    ModelIntegrityError,
    build_model,
    export_model,
    load_exported,
    normalize_input,
)

torch.set_num_threads(2)

CARD = {
    "name": "digits", "architecture": "cnn", "modelOptions": {"hidden": 32}, "numClasses": 10,
    "classes": [str(i) for i in range(10)], "inputShape": [1, 8, 8],
    "preprocessing": {"resize": [8, 8], "scale": 255.0, "mean": [0.3], "std": [0.4]},
    "metrics": {"accuracy": 0.97}, "datasetDigest": "d" * 64,
}


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)], ids=["1x8x8", "3x32x32"])
@pytest.mark.parametrize("arch", TASK_ARCHITECTURES["image-classification"])
def test_every_image_architecture_builds_and_runs(arch: str, shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    model = build_model(arch, num_classes=7, in_channels=c, image_size=h).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", TEXT_ARCHITECTURES)
def test_every_text_architecture_reads_token_ids(arch: str) -> None:
    model = build_model(arch, num_classes=3, in_channels=12, image_size=1,
                        options={"vocabSize": 40}).eval()
    ids = torch.randint(0, 40, (2, 12, 1, 1)).float()
    ids[1] = 0  # all padding: read as one unknown token, still finite
    with torch.inference_mode():
        out = model(ids)
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_options_are_checked() -> None:
    assert build_model("mlp", 3, 1, 8, {"hidden": [16], "dropout": 0.0})[1].out_features == 16
    with pytest.raises(ValueError, match="model.options for cnn"):
        build_model("cnn", 3, 1, 8, {"depth": 5})
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("gpt", 3, 1, 8)


def test_small_images_keep_resolution_large_ones_use_the_imagenet_stem() -> None:
    small = build_model("resnet18", 10, 1, 8)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    large = build_model("resnet18", 10, 3, 224)
    assert large.conv1.stride == (2, 2) and isinstance(large.maxpool, nn.MaxPool2d)


def _export(tmp_path: Path, model: nn.Module | None = None) -> tuple[nn.Module, dict, Path]:
    model = model or build_model("cnn", 10, 1, 8, {"hidden": 32})
    card = export_model(model, tmp_path / "model", CARD)
    return model, card, tmp_path / "model"


def test_export_round_trip(tmp_path: Path) -> None:
    model, card, model_dir = _export(tmp_path)
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.json", "model.onnx", "model.safetensors"]
    on_disk = json.loads((model_dir / "model.json").read_text())
    assert on_disk == card
    expected_keys = {"name", "architecture", "modelOptions", "numClasses", "classes", "inputShape",
                     "preprocessing", "metrics", "datasetDigest", "sha256", "createdAt", "framework", "onnx"}
    assert expected_keys <= card.keys() and card["framework"]["torch"] == torch.__version__

    loaded, loaded_card = load_exported(model_dir, expected_sha256=card["sha256"])
    assert loaded_card == card and not loaded.training
    x = torch.rand(4, 1, 8, 8) * 255
    with torch.inference_mode():
        assert torch.equal(loaded(normalize_input(x, card)), model.eval()(normalize_input(x, card)))


def test_export_strips_ddp_and_compile_prefixes(tmp_path: Path) -> None:
    class Wrapper(nn.Module):  # what torch.compile's OptimizedModule looks like to state_dict
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

    inner = build_model("cnn", 10, 1, 8, {"hidden": 32})
    _, card, model_dir = _export(tmp_path, Wrapper(inner))
    keys = load_file(str(model_dir / "model.safetensors")).keys()
    assert keys == inner.state_dict().keys()
    load_exported(model_dir)


def test_tampered_weights_are_refused_before_loading(tmp_path: Path) -> None:
    _, card, model_dir = _export(tmp_path)
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match .* the model card"):
        load_exported(model_dir)


def test_expected_sha256_from_the_caller_wins(tmp_path: Path) -> None:
    _, card, model_dir = _export(tmp_path)
    with pytest.raises(ModelIntegrityError, match="expected by the caller"):
        load_exported(model_dir, expected_sha256="0" * 64)
    # a card rewritten to match swapped weights still fails the caller's pin
    other = build_model("cnn", 10, 1, 8, {"hidden": 32})
    export_model(other, model_dir, CARD)
    with pytest.raises(ModelIntegrityError):
        load_exported(model_dir, expected_sha256=card["sha256"])


def test_missing_files_are_an_integrity_error(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="cannot read"):
        load_exported(tmp_path)
