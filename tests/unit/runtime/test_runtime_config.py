"""The run-config contract: importable without torch, camelCase, validated with field names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from tauon_runtime.contract import ARCHITECTURES

from tauon_runtime.config import (
    ConfigError,
    PrepareConfig,
    ServeConfig,
    TrainConfig,
    load_config,
)


def test_importing_config_does_not_import_torch() -> None:
    code = "import sys, tauon_runtime.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_and_camel_case_round_trip() -> None:
    cfg = TrainConfig.model_validate({"model": {"architecture": "cnn"}, "datasetDir": "/d", "outputDir": "/o"})
    assert cfg.hyperparameters.batch_size == 64 and cfg.precision == "fp32"
    dumped = cfg.model_dump(by_alias=True)
    assert {"datasetDir", "outputDir", "channelsLast", "dataLoader", "earlyStopping"} <= dumped.keys()
    assert TrainConfig.model_validate(dumped) == cfg
    # populate_by_name: snake_case works too, and models are frozen
    assert TrainConfig(model={"architecture": "cnn"}, dataset_dir="/d", output_dir="/o") == cfg
    with pytest.raises(ValidationError):
        cfg.precision = "bf16"  # type: ignore[misc]


def test_serve_config_defaults() -> None:
    cfg = ServeConfig.model_validate({"modelName": "digits", "modelDir": "/m"})
    assert (cfg.port, cfg.host, cfg.top_k, cfg.device) == (8080, "0.0.0.0", 5, "auto")
    assert (cfg.batching.max_batch_size, cfg.batching.max_latency_ms) == (32, 5)
    assert cfg.max_request_bytes == 8 * 1024 * 1024 and cfg.feedback.enabled is False


def test_cluster_only_fields_are_refused() -> None:
    """The operator hands over the contract's fields only: anything else is a bug, named."""
    spec = {"model": {"architecture": "cnn"}, "datasetRef": {"name": "d"}, "workers": 2,
            "datasetDir": "/d", "outputDir": "/o"}
    with pytest.raises(ValidationError, match="datasetRef") as e:
        TrainConfig.model_validate(spec)
    assert "workers" in str(e.value)


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        (PrepareConfig, {"source": {}, "outputDir": "/o"}, "source"),
        (PrepareConfig, {"source": {"builtin": {"name": "digits"}, "synthetic": {}}, "outputDir": "/o"},
         "source"),
        (PrepareConfig, {"source": {"builtin": {"name": "digits"}}, "outputDir": "/o",
                         "splits": {"train": 0.5, "validation": 0.1, "test": 0.1}}, "splits"),
        (PrepareConfig, {"source": {"http": {"url": "ftp://x", "sha256": "0" * 64}}, "outputDir": "/o"},
         "source.http.url"),
        (PrepareConfig, {"source": {"http": {"url": "https://x/a.tgz", "sha256": "abc"}}, "outputDir": "/o"},
         "source.http.sha256"),
        (PrepareConfig, {"source": {"synthetic": {"shape": [2, 8, 8]}}, "outputDir": "/o"}, "source.synthetic"),
        (PrepareConfig, {"source": {"builtin": {"name": "mnist"}}, "outputDir": "/o"}, "source.builtin.name"),
        (TrainConfig, {"datasetDir": "/d"}, "outputDir"),
        (TrainConfig, {"datasetDir": "/d", "outputDir": "/o", "model": {"architecture": "gpt"}},
         "model.architecture"),
        (TrainConfig, {"datasetDir": "/d", "outputDir": "/o", "hyperparameters": {"learningRate": 0}},
         "hyperparameters.learningRate"),
        (TrainConfig, {"datasetDir": "/d", "outputDir": "/o", "precision": "fp8"}, "precision"),
        (TrainConfig, {"datasetDir": "/d", "outputDir": "/o", "hyperparameters": {"optimizer": "lion"}},
         "hyperparameters.optimizer"),
        (ServeConfig, {"modelName": "m", "modelDir": "/m", "port": 0}, "port"),
        (ServeConfig, {"modelName": "m", "modelDir": "/m", "expectedSha256": "xyz"}, "expectedSha256"),
    ],
)
def test_invalid_configs_name_the_field(tmp_path, kind, data, field) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_config(kind, path)
    assert f"{field}:" in str(err.value), str(err.value)


def test_load_config_from_yaml_path_env_and_inline_json(tmp_path, monkeypatch) -> None:
    yaml_path = tmp_path / "prepare.yaml"
    yaml_path.write_text("source:\n  synthetic: {numSamples: 50, shape: [3, 4, 4]}\noutputDir: /out\n")
    cfg = load_config(PrepareConfig, yaml_path)
    assert cfg.source.synthetic.num_samples == 50 and cfg.source.synthetic.shape == (3, 4, 4)

    monkeypatch.setenv("TAUON_RUN_CONFIG", str(yaml_path))
    assert load_config(PrepareConfig) == cfg

    monkeypatch.delenv("TAUON_RUN_CONFIG")
    monkeypatch.setenv("TAUON_RUN_CONFIG_JSON", json.dumps({"modelName": "m", "modelDir": "/m"}))
    assert load_config(ServeConfig).model_name == "m"

    monkeypatch.delenv("TAUON_RUN_CONFIG_JSON")
    with pytest.raises(ConfigError, match="no run config"):
        load_config(ServeConfig)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(ServeConfig, tmp_path / "missing.yaml")


def test_architectures_match_the_zoo() -> None:
    from tauon_runtime.models import ARCHITECTURES as zoo

    assert zoo == ARCHITECTURES
    assert {"cnn", "lenet", "mlp", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "vgg11",
            "lstm", "gru", "transformer"} == set(zoo)
