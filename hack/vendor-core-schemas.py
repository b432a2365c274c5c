"""Writes operator/tauon_operator/api/core_v1_schemas.json: the Kubernetes API server's own
OpenAPI v3 schemas of the core/v1 types Tauon's CRDs pass through to pods (tolerations,
affinity), with every type they refer to, read from a local control plane of the pinned
version. crdgen inlines them, so the API server validates those fields exactly as it does in a
pod spec. Run it again when the control plane's Kubernetes version changes:

    .tauon/venv/bin/python hack/vendor-core-schemas.py"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localkube import Cluster

ROOTS = ("io.k8s.api.core.v1.Toleration", "io.k8s.api.core.v1.Affinity")
OUT = Path(__file__).resolve().parent.parent / "operator/tauon_operator/api/core_v1_schemas.json"


def refs(node) -> set[str]:
    if isinstance(node, dict):
        out = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
        for v in node.values():
            out |= refs(v)
        return out
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node)) if node else set()
    return set()


def main() -> None:
    with Cluster.start(nodes=[]) as c:
        with urllib.request.urlopen(f"{c.server}/openapi/v3/api/v1", context=c.ssl_context()) as r:
            schemas = json.load(r)["components"]["schemas"]
        version = c.kubectl("version", "-o", "json").stdout
    todo, keep = list(ROOTS), {}
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = schemas[name]
            todo += sorted(refs(schemas[name]) - keep.keys())
    server = json.loads(version)["serverVersion"]["gitVersion"]
    OUT.write_text(json.dumps({"kubernetes": server, "schemas": dict(sorted(keep.items()))},
                              indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {len(keep)} schemas from kube-apiserver {server}")


if __name__ == "__main__":
    main()
