"""The manifest corpus (tests/integration/api_corpus): what the API server must reject, each case
naming the field it must blame, and under valid/ the variants it must accept. Read the same way
by the API-server test and by the models' parity test.

A case is YAML with `# key: value` headers:
  expect:  a field path the API server's message must name (must-reject cases)
  message: a piece of the sentence it must say (optional)
  mode:    `update`: the first document is applied, the second (a change) must be rejected
  name:    the object name to use as written (cases about names); otherwise the file's stem
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).parent / "integration" / "api_corpus"
REJECTED = sorted(ROOT.glob("*.yaml"))
ACCEPTED = sorted((ROOT / "valid").glob("*.yaml"))


@dataclass(frozen=True)
class Case:
    path: Path
    expect: str | None  # a field path the API server's message must name
    message: str | None  # and, when given, a piece of the sentence
    update: bool  # first document applied, the second (a change) rejected
    docs: tuple[dict, ...]


def headers(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            found.setdefault(key.strip(), value.strip())
    return found


def load(path: Path) -> Case:
    head = headers(path)
    docs = tuple(d for d in yaml.safe_load_all(path.read_text()) if d)
    # One object name per case, so cases can share a namespace; name cases keep theirs.
    name = head.get("name") or path.stem[:63]
    for doc in docs:
        doc.setdefault("metadata", {})["name"] = name
    return Case(
        path=path,
        expect=head.get("expect"),
        message=head.get("message"),
        update=head.get("mode", "").startswith("update"),
        docs=docs,
    )
