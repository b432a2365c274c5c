"""The Dockerfile's rules, checked without an engine: the three targets, a numeric non-root USER
in each final stage, pinned base images, one source of pins, nothing of the build left behind."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "docker" / "requirements-operator.txt"
EDGE_LOCK = ROOT / "docker" / "requirements-edge.txt"
ENTRYPOINTS = {"operator": "tauon-operator", "runtime": "tauon-runtime", "runtime-edge": "tauon-runtime"}
TARGETS = tuple(ENTRYPOINTS)
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|clang|cargo|rustc|git)\b")
NOT_IN_OPERATOR = {"torch", "torchvision", "numpy", "scikit-learn", "safetensors", "pillow"}
NOT_IN_EDGE = {"torch", "torchvision", "scikit-learn", "safetensors", "onnx", "onnxscript", "kopf",
               "kubernetes", "sympy", "triton"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            current = stages[name] = Stage(name, words[0])
        elif current is None and op == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        elif current is not None:
            current.instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse(DOCKERFILE.read_text())


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(Requirement(d).name): str(Requirement(d).specifier) for d in deps}


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = str(req.specifier)
    return pins


def resolve_base(stage: Stage, args: dict[str, str], stages: dict[str, Stage]) -> str:
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], stage.base)
    return resolve_base(stages[base], args, stages) if base in stages else base


def test_all_targets_exist(dockerfile):
    _, stages = dockerfile
    assert set(TARGETS) <= set(stages)


@pytest.mark.parametrize("target", TARGETS)
def test_final_stage_runs_as_numeric_non_root_user(dockerfile, target):
    _, stages = dockerfile
    users = stages[target].all("USER")
    assert users, f"{target}: no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]
    assert uid == "65532"  # the user the chart and the operator's pods run as


@pytest.mark.parametrize("target", TARGETS)
def test_final_stage_has_an_entrypoint_and_no_build_tools(dockerfile, target):
    args, stages = dockerfile
    stage = stages[target]
    assert stage.all("ENTRYPOINT") == [f'["{ENTRYPOINTS[target]}"]']
    # Everything a final image holds comes from its ancestry: none of it installs compilers.
    chain, s = [], stage
    while s is not None:
        chain.append(s)
        s = stages.get(s.base)
    for s in chain:
        for run in s.all("RUN"):
            assert not BUILD_TOOLS.search(run), (s.name, run)
            assert "apt-get install" not in run, (s.name, run)
    # Files come from environment stages, never from the stage that builds the wheel.
    for copy in stage.all("COPY"):
        assert "--from=build " not in copy + " ", copy


def test_base_images_are_pinned(dockerfile):
    args, stages = dockerfile
    for stage in stages.values():
        image = resolve_base(stage, args, stages)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image
    assert ":latest" not in DOCKERFILE.read_text()


def test_operator_stage_installs_the_lock_without_torch(dockerfile):
    _, stages = dockerfile
    env = stages["operator-env"]
    [run] = env.all("RUN")
    assert shlex.split(run)[:2] == ["/docker/install.sh", "operator"]
    install = (ROOT / "docker" / "install.sh").read_text()
    assert '--no-deps -r "$here/requirements-operator.txt"' in install
    assert '--no-deps "$wheels"/tauon-*.whl' in install
    assert stages["operator"].all("COPY") == ["--from=operator-env /opt/tauon /opt/tauon"]
    assert not NOT_IN_OPERATOR & set(lock_pins())


def test_edge_stage_installs_its_lock_without_torch(dockerfile):
    _, stages = dockerfile
    [run] = stages["runtime-edge-env"].all("RUN")
    assert shlex.split(run)[:2] == ["/docker/install.sh", "edge"]
    install = (ROOT / "docker" / "install.sh").read_text()
    assert '--no-deps -r "$here/requirements-edge.txt"' in install
    assert stages["runtime-edge"].all("COPY") == ["--from=runtime-edge-env /opt/tauon /opt/tauon"]
    assert stages["runtime-edge"].all("CMD") == ['["serve"]']
    edge = lock_pins(EDGE_LOCK)
    assert not NOT_IN_EDGE & set(edge) and not any(n.startswith("nvidia") for n in edge)
    assert {"onnxruntime", "numpy", "aiohttp", "pillow", "pydantic", "prometheus-client"} <= set(edge)


def test_runtime_stage_installs_pyprojects_pins(dockerfile):
    _, stages = dockerfile
    [run] = stages["runtime-env"].all("RUN")
    assert "/docker/install.sh runtime" in run
    assert pyproject_pins()["torch"] == "==2.14.1"


@pytest.mark.parametrize("path", [LOCK, EDGE_LOCK], ids=lambda p: p.name)
def test_lock_pins_equal_pyprojects(path):
    pins, lock = pyproject_pins(), lock_pins(path)
    assert all(spec.startswith("==") for spec in lock.values())
    assert {"pydantic", "pyyaml", "prometheus-client", "aiohttp"} <= set(lock)
    for name, spec in lock.items():
        if name in pins:
            assert spec == pins[name], f"{name}: lock {spec}, pyproject {pins[name]}"
    assert all(spec.startswith("==") for spec in pins.values())


def test_dockerignore_keeps_the_context_to_what_is_copied(dockerfile):
    _, stages = dockerfile
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    assert ignore[0] == "*"
    allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
    for stage in stages.values():
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            for src in copy.split()[:-1]:
                assert src.rstrip("/") in allowed, src
                assert (ROOT / src).exists(), src
