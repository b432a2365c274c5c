"""One contract: the spec pieces the operator hands the runtime are defined once, in
`tauon_runtime.contract`, and the API models embed those very classes. These tests fail when a
second definition appears, when a default or a limit differs between what the API server
validates and what the runtime parses, or when a shared key is spelled by hand elsewhere."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tauon_operator.api import Dataset, ModelDeployment, TrainingJob, crdgen
from tauon_operator.api.dataset import DatasetSpec
from tauon_operator.api.modeldeployment import ModelDeploymentSpec
from tauon_operator.api.trainingjob import TrainingJobSpec
from tauon_operator.builders import dataset as build_dataset
from tauon_operator.builders import modeldeployment as build_md
from tauon_operator.builders import trainingjob as build_tj
from tauon_runtime import contract
from tauon_runtime.contract import keys

REPO = Path(__file__).resolve().parents[3]
# kustomization.yaml files are kustomize's, not objects to apply
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.name != "kustomization.yaml")
SOURCES = [p for root in ("operator", "runtime") for p in (REPO / root).rglob("*.py")]


def _docs(kind: str) -> list:
    return [
        pytest.param(doc, id=path.relative_to(REPO / "examples").as_posix())
        for path in EXAMPLES
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == kind
    ]


def _contract_models() -> dict[str, type[BaseModel]]:
    return {n: v for n, v in vars(contract).items()
            if inspect.isclass(v) and issubclass(v, BaseModel) and v is not contract.ContractModel}


# The spec fields whose model is a contract piece, and the run config that carries them.
SHARED = [
    (DatasetSpec, "source", contract.PrepareConfig),
    (DatasetSpec, "splits", contract.PrepareConfig),
    (DatasetSpec, "preprocessing", contract.PrepareConfig),
    (DatasetSpec, "format", contract.PrepareConfig),
    *[(TrainingJobSpec, f, contract.TrainConfig) for f in contract.TrainConfig.SPEC_FIELDS],
    (ModelDeploymentSpec, "batching", contract.ServeConfig),
    (ModelDeploymentSpec, "feedback", contract.ServeConfig),
]


@pytest.mark.parametrize("spec, field, run_config", SHARED,
                         ids=[f"{s.__name__}.{f}" for s, f, _ in SHARED])
def test_the_api_embeds_the_contracts_own_type(spec, field, run_config):
    api_field, runtime_field = spec.model_fields[field], run_config.model_fields[field]
    assert api_field.annotation == runtime_field.annotation, f"{spec.__name__}.{field} has its own type"


@pytest.mark.parametrize("spec, field, run_config", SHARED,
                         ids=[f"{s.__name__}.{f}" for s, f, _ in SHARED])
def test_defaults_and_limits_are_the_same_in_the_crd_and_the_runtime(spec, field, run_config):
    """The CRD's schema of the field (what the API server enforces) equals the schema of the
    runtime's field, default and every nested limit included."""
    def schema_of(model: type[BaseModel]) -> dict:
        whole = crdgen.structural(model)
        node = whole["properties"][spec.model_fields[field].alias or field]
        node.pop("description", None)
        # Immutability is the API server's alone (a process has no old object to compare with).
        rules = [r for r in node.pop("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
        return {**node, **({"x-kubernetes-validations": rules} if rules else {})}

    assert schema_of(spec) == schema_of(run_config)


def test_no_contract_model_is_defined_twice():
    """A class named like a contract piece may exist only in the contract."""
    names = set(_contract_models())
    twice = []
    for path in SOURCES:
        if "contract" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name in names:
                twice.append(f"{path.relative_to(REPO)}: class {node.name}")
    assert not twice, twice


@pytest.mark.parametrize("value", [
    *[v for k, v in vars(keys).items() if k.endswith(("_ANNOTATION", "_LABEL"))],
    *[v for k, v in vars(keys).items() if k.startswith("ENV_")],
])
def test_shared_keys_are_spelled_only_in_the_contract(value):
    spelled = [str(p.relative_to(REPO)) for p in SOURCES
               if p.name != "keys.py" and f'"{value}"' in p.read_text()]
    assert not spelled, f"{value!r} spelled by hand in {spelled}"


def test_exit_codes_have_one_definition():
    pattern = re.compile(r"^\s*EXIT_[A-Z_]+\s*(,|=)", re.M)
    defined = [str(p.relative_to(REPO)) for p in SOURCES if pattern.search(p.read_text())]
    assert not defined, f"exit codes defined outside contract.keys: {defined}"
    assert [int(c) for c in keys.ExitCode] == [0, 1, 2, 3]
    assert keys.PERMANENT_EXIT_CODES == (2, 3)


def test_architectures_match_the_model_zoo():
    assert contract.ARCHITECTURES == typing.get_args(contract.Architecture)
    models = pytest.importorskip("tauon_runtime.models")
    assert tuple(models.zoo._BUILDERS) == contract.ARCHITECTURES


def test_the_contract_imports_no_torch():
    import subprocess

    code = "import sys, tauon_runtime.contract, tauon_runtime.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the run configs the builders render are what the runtime parses ---------------------------

@pytest.mark.parametrize("doc", _docs("Dataset"))
def test_dataset_becomes_a_prepare_config(doc):
    doc = {**doc, "metadata": {"name": "d", "namespace": "n", "uid": "u", **doc["metadata"]}}
    cfg = contract.PrepareConfig.model_validate_json(build_dataset.run_config(doc))
    spec = Dataset.parse(doc).spec
    assert (cfg.source, cfg.splits, cfg.preprocessing, cfg.format) == (
        spec.source, spec.splits, spec.preprocessing, spec.format)


@pytest.mark.parametrize("doc", _docs("TrainingJob"))
def test_trainingjob_becomes_a_train_config(doc):
    doc = {**doc, "metadata": {"name": "t", "namespace": "n", "uid": "u", **doc["metadata"]}}
    cfg = contract.TrainConfig.model_validate_json(build_tj.run_config(doc))
    spec = TrainingJob.parse(doc).spec
    for f in contract.TrainConfig.SPEC_FIELDS:
        if f == "output":  # the model is named after its TrainingJob unless the spec names it
            name = spec.output.model_name or doc["metadata"]["name"]
            want = {**spec.output.model_dump(), "model_name": name}
            assert cfg.output.model_dump() == want
            continue
        assert getattr(cfg, f) == getattr(spec, f), f


@pytest.mark.parametrize("doc", _docs("ModelDeployment"))
def test_modeldeployment_becomes_a_serve_config(doc):
    doc = {**doc, "metadata": {"name": "m", "namespace": "n", "uid": "u", **doc["metadata"]}}
    model = build_md.ResolvedModel("claim", "model", "a" * 64)
    cfg = contract.ServeConfig.model_validate_json(build_md.serve_config(doc, model))
    spec = ModelDeployment.parse(doc).spec
    assert (cfg.batching, cfg.feedback) == (spec.batching, spec.feedback)
    assert (cfg.feedback_path is not None) == spec.feedback.enabled
