"""The generated CRDs obey the structural-schema rules and match the checked-in YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tauon_operator.__main__ import main
from tauon_operator.api import KINDS, crdgen

REPO = Path(__file__).resolve().parents[3]
CRDS = {kind.KIND: crdgen.crd(kind) for kind in KINDS}
OPAQUE = {("TrainingJob", "spec.model.options")}  # the only blocks allowed to keep unknown fields
# CPU: a number or a string, so untyped (and then checked per type); see api.common.CpuQuantity.
CPU = {("TrainingJob", "spec.resources.cpu"), ("ModelDeployment", "spec.resources.cpu")}


def nodes(schema: dict, path: str = ""):
    """Every schema node with its dotted path (`[]` for array items, `{}` for map values)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}".lstrip("."))
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")
    for sub in schema.get("anyOf", []):
        yield from nodes(sub, f"{path}|")


def all_nodes():
    for kind, crd in CRDS.items():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in nodes(schema):
            yield kind, path, node


def int_or_string(node: dict) -> bool:
    # No `anyOf: [integer, string]` branches: they add nothing but a second type error.
    return node.get("x-kubernetes-int-or-string") is True and "anyOf" not in node


@pytest.mark.parametrize("kind", CRDS)
def test_names_and_kubectl_experience(kind):
    crd = CRDS[kind]
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.tauon.dev"
    assert crd["spec"]["group"] == "tauon.dev"
    assert names["categories"] == ["tauon"]
    assert "ds" not in names["shortNames"]  # DaemonSet's
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns[0] == "Phase" and columns[-1] == "Age"


def test_short_names():
    assert {k: CRDS[k]["spec"]["names"]["shortNames"] for k in CRDS} == {
        "Dataset": ["tds"],
        "TrainingJob": ["tj"],
        "ModelDeployment": ["mdep"],
    }


def test_printer_columns_point_at_typed_fields():
    for kind, crd in CRDS.items():
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            path = column["jsonPath"]
            if path.startswith(".metadata") or "[?" in path:
                continue
            node = schema
            for part in path.strip(".").split("."):
                node = node.get("properties", {}).get(part) or node["additionalProperties"]
            assert node["type"] == column["type"], (kind, path)


@pytest.mark.parametrize("kind", CRDS)
def test_required_columns(kind):
    columns = {c["name"] for c in CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]}
    wanted = {
        "Dataset": {"Phase", "Samples", "Digest", "Age"},
        "TrainingJob": {"Phase", "Progress", "Accuracy", "Age"},
        "ModelDeployment": {"Phase", "Ready", "Champion", "Canary", "Feedback", "URL", "Age"},
    }[kind]
    assert wanted <= columns


def test_no_refs_defs_titles_or_nulls():
    text = yaml.safe_dump(list(CRDS.values()))
    for forbidden in ("$ref", "$defs", "title:", "nullable", "type: 'null'", "type: null", "const:"):
        assert forbidden not in text


def test_every_node_is_typed():
    for kind, path, node in all_nodes():
        if (kind, path) in CPU:
            continue
        assert "type" in node or int_or_string(node), (kind, path, node)
        assert node.get("type") != "null", (kind, path)
        assert "anyOf" not in node, (kind, path)


def test_every_field_is_described_except_metadata():
    for kind, path, node in all_nodes():
        if path in ("metadata",) or path.endswith("[]") or path.endswith("{}"):
            continue
        assert node.get("description"), (kind, path)


def test_preserve_unknown_fields_only_for_opaque_blocks():
    found = {(k, p) for k, p, n in all_nodes() if n.get("x-kubernetes-preserve-unknown-fields")}
    assert found == OPAQUE | CPU


def test_openapi_v3_0_spelling():
    for kind, path, node in all_nodes():
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                assert node[key] is True, (kind, path)
                assert ("minimum" if key == "exclusiveMinimum" else "maximum") in node
        assert node.get("additionalProperties") is not False, (kind, path)
        assert not ("properties" in node and "additionalProperties" in node), (kind, path)
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict) and "prefixItems" not in node, (kind, path)


def test_spec_strings_and_arrays_are_bounded_for_cel_cost():
    for kind, path, node in all_nodes():
        if not path.startswith("spec"):
            continue
        if int_or_string(node):
            assert "maxLength" in node, (kind, path)
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, (kind, path)
        if node.get("type") == "array":
            assert "maxItems" in node, (kind, path)


def test_cel_rules_are_complete():
    rules = [(k, p, r) for k, p, n in all_nodes() for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 20
    for kind, path, rule in rules:
        assert set(rule) <= {"rule", "message", "fieldPath", "reason", "messageExpression"}
        assert rule["rule"] and rule["message"], (kind, path)
        assert not path.startswith("status"), "status is written by controllers, not validated by CEL"
        if "fieldPath" in rule:
            assert rule["fieldPath"].startswith(".")


@pytest.mark.parametrize(
    "kind, path",
    [
        ("Dataset", "spec.source"),
        ("TrainingJob", "spec.model"),
        ("TrainingJob", "spec.datasetRef"),
    ],
)
def test_immutable_fields(kind, path):
    node = dict(all_nodes_by_path())[(kind, path)]
    assert any(r["rule"] == "self == oldSelf" for r in node["x-kubernetes-validations"])


def all_nodes_by_path():
    return [((k, p), n) for k, p, n in all_nodes()]


def test_conditions_are_a_map_list_keyed_by_type():
    for kind, crd in CRDS.items():
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert {"type", "status", "reason", "lastTransitionTime"} <= set(item["required"])
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert {"observedGeneration", "phase"} <= set(status["properties"])


def test_status_has_no_defaults_but_an_unobserved_generation_and_metrics_are_open_maps():
    for kind, path, node in all_nodes():
        if path == "status":
            # A fresh object, before the operator writes status, reads InProgress to kstatus.
            assert node["default"] == {"observedGeneration": 0}, kind
        elif path.startswith("status"):
            assert "default" not in node, (kind, path)
    status = CRDS["TrainingJob"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]
    for name in ("latest", "best"):
        assert status["properties"]["metrics"]["properties"][name]["additionalProperties"] == {
            "type": "number"
        }


def test_nested_defaults_are_written_as_empty_objects():
    spec = CRDS["TrainingJob"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["hyperparameters"]["default"] == {}
    assert spec["properties"]["hyperparameters"]["properties"]["epochs"]["default"] == 10
    assert "default" not in spec["properties"]["earlyStopping"]  # optional block: absent = off


# --- the checked-in files ----------------------------------------------------------------------


def test_checked_in_crds_match_the_generator():
    problems = crdgen.drift(REPO)
    assert not problems, "run `tauon-operator crds`\n" + "".join(problems)


def test_chart_crds_are_identical_copies():
    for path in sorted((REPO / "crds").glob("*.yaml")):
        assert (REPO / "charts/tauon/crds" / path.name).read_text() == path.read_text()


def test_cli_check_detects_drift(tmp_path, capsys):
    assert main(["crds", "--root", str(tmp_path)]) == 0
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 0
    victim = tmp_path / "charts/tauon/crds/tauon.dev_datasets.yaml"
    victim.write_text(victim.read_text().replace("tds", "ds"))
    (tmp_path / "crds/tauon.dev_stale.yaml").write_text("{}")
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "tauon.dev_datasets.yaml" in out and "stale" in out
    assert main(["crds", "--root", str(tmp_path)]) == 0
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 0


# --- quantities and names ----------------------------------------------------------------------

QUANTITIES = {
    ("Dataset", "spec.storage.size"),
    ("TrainingJob", "spec.resources.memory"),
    ("ModelDeployment", "spec.resources.memory"),
}


def test_quantities_are_int_or_string_and_positive_in_one_rule():
    found = {(k, p) for k, p, n in all_nodes() if n.get("x-kubernetes-int-or-string")}
    assert found == QUANTITIES
    for kind, path in QUANTITIES:
        node = dict(all_nodes_by_path())[(kind, path)]
        assert "pattern" not in node  # CEL says what is wrong in one sentence, not a regex
        (rule,) = node["x-kubernetes-validations"]
        assert "isGreaterThan(quantity('0'))" in rule["rule"] and "above zero" in rule["message"]


def test_cpu_takes_numbers_and_strings_above_zero_and_nothing_else():
    for kind, path in CPU:
        node = dict(all_nodes_by_path())[(kind, path)]
        assert "type" not in node and node["x-kubernetes-preserve-unknown-fields"]
        assert node["minimum"] == 0 and node["exclusiveMinimum"] is True  # numbers
        assert node["pattern"].startswith("^\\+?") and node["maxLength"] == 64  # strings
        # No string passes minLength 1 + maxLength 0, no number minimum 1 + maximum 0: what
        # passes the inner schema is a boolean, an object or a list, and `not` refuses it.
        assert node["not"] == {"minLength": 1, "maxLength": 0, "minimum": 1, "maximum": 0}


@pytest.mark.parametrize("kind", CRDS)
def test_names_are_checked_at_the_root(kind):
    schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"]["properties"] == {
        "name": {"description": f"Name of the {kind}.", "type": "string"}
    }
    rules = schema["x-kubernetes-validations"]
    assert rules and all(r["fieldPath"] == ".metadata.name" for r in rules)
    assert any("size() <=" in r["rule"] for r in rules)
