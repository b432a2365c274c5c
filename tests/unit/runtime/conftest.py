"""Fixtures for the runtime's unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test this checkout's runtime, whatever checkout the shared venv's editable install points at.
RUNTIME_SRC = Path(__file__).resolve().parents[3] / "runtime"
sys.path.insert(0, str(RUNTIME_SRC))


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled digits, prepared once per session."""
    from tauon_runtime.config import PrepareConfig
    from tauon_runtime.data import prepare
    from tauon_runtime.report import Reporter

    out = tmp_path_factory.mktemp("digits")
    prepare(PrepareConfig.model_validate({"source": {"builtin": {"name": "digits"}}, "outputDir": str(out)}),
            Reporter(enabled=False))
    return out
