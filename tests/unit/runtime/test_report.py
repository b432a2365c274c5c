"""Progress reporting: JSON lines, and merge patches of the owner's status subresource."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tauon_runtime.data.prepare import status_patch as prepare_status
from tauon_runtime.report import Reporter, StatusReporter, merge, write_termination_log
from tauon_runtime.train.loop import status_patch as train_status

TARGET = "tauon.dev/v1alpha1/namespaces/default/trainingjobs/mnist"


class FakeApiServer:
    """Records PATCH requests on 127.0.0.1 (the runtime's side of the API call, nothing more)."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        recorder, code = self.requests, status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("s3cr3t-token\n")
    return tmp_path


def test_status_reporter_sends_merge_patch(api: FakeApiServer, sa_dir: Path) -> None:
    reporter = StatusReporter.from_env({
        "TAUON_STATUS_TARGET": TARGET, "TAUON_STATUS_API_URL": api.url, "TAUON_SERVICEACCOUNT_DIR": str(sa_dir),
    })
    assert reporter is not None
    events = Reporter(stream=io.StringIO(), status=reporter, status_for=train_status)
    events.event("epoch", epoch=3, totalEpochs=10, step=66, totalSteps=220, percent=30.0, etaSeconds=12.5,
                 metrics={"accuracy": 0.95, "loss": 0.2}, best={"accuracy": 0.96})
    (req,) = api.requests
    assert req["path"] == "/apis/tauon.dev/v1alpha1/namespaces/default/trainingjobs/mnist/status"
    assert req["headers"]["Content-Type"] == "application/merge-patch+json"
    assert req["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert req["body"] == {"status": {
        "progress": {"epoch": 3, "totalEpochs": 10, "step": 66, "totalSteps": 220, "percent": 30.0,
                     "etaSeconds": 12},  # whole seconds, as the CRD's integer field wants
        "metrics": {"latest": {"accuracy": 0.95, "loss": 0.2}, "best": {"accuracy": 0.96}},
    }}


def test_patches_are_throttled_merged_and_final_events_flush(api: FakeApiServer, sa_dir: Path) -> None:
    reporter = StatusReporter(TARGET, api.url, token_path=sa_dir / "token", interval=60)
    events = Reporter(stream=io.StringIO(), status=reporter, status_for=train_status)
    events.event("start", epoch=0, totalEpochs=2, step=0, totalSteps=4, percent=0.0, etaSeconds=None)
    for step in (1, 2, 3):  # inside the interval: held back, merged
        events.to_status("progress", {"epoch": 0, "step": step, "percent": step * 25.0})
    events.event("checkpoint", path="/out/checkpoints/step-00000003.pt", epoch=0, step=3)
    assert len(api.requests) == 1
    events.event("exported", location="/out/model", sha256="a" * 64, metrics={"accuracy": 0.97})
    assert len(api.requests) == 2
    merged = api.requests[1]["body"]["status"]
    assert merged["progress"] == {"epoch": 0, "step": 3, "percent": 75.0}  # the last of the three
    assert merged["latestCheckpoint"] == "/out/checkpoints/step-00000003.pt"
    assert merged["model"] == {"location": "/out/model", "sha256": "a" * 64, "metrics": {"accuracy": 0.97}}


def test_failures_are_logged_not_raised(sa_dir: Path) -> None:
    failing = FakeApiServer(status=403)
    logs: list[str] = []
    try:
        reporter = StatusReporter(TARGET, failing.url, token_path=sa_dir / "token", log=logs.append)
        reporter.patch({"status": {"progress": {"step": 1}}}, final=True)
    finally:
        failing.close()
    unreachable = StatusReporter(TARGET, "http://127.0.0.1:1", log=logs.append, timeout=1)
    unreachable.patch({"status": {}}, final=True)
    assert reporter.failures == 1 and unreachable.failures == 1
    assert "403" in logs[0] and len(logs) == 2


def test_from_env_needs_a_target_and_builds_the_in_cluster_url(tmp_path: Path) -> None:
    assert StatusReporter.from_env({}) is None
    r = StatusReporter.from_env({"TAUON_STATUS_TARGET": TARGET, "KUBERNETES_SERVICE_HOST": "fd00::1",
                                 "KUBERNETES_SERVICE_PORT": "6443", "TAUON_SERVICEACCOUNT_DIR": str(tmp_path)})
    assert r.url.startswith("https://[fd00::1]:6443/apis/tauon.dev/v1alpha1/namespaces/default/")
    with pytest.raises(ValueError, match="TAUON_STATUS_TARGET"):
        StatusReporter("trainingjobs/mnist", "https://x")


def test_json_lines_and_rank_gating() -> None:
    out = io.StringIO()
    Reporter(stream=out).event("epoch", epoch=1, metrics={"accuracy": 0.5})
    record = json.loads(out.getvalue())
    assert record["event"] == "epoch" and record["metrics"] == {"accuracy": 0.5} and "time" in record
    silent = io.StringIO()
    Reporter(enabled=False, stream=silent).event("epoch", epoch=1)
    assert silent.getvalue() == ""


def test_prepare_status_patch() -> None:
    body = prepare_status("finished", {"digest": "d", "counts": {"train": 1}, "classes": ["a"], "bytes": 9,
                                       "path": "versions/d"})
    assert body == {"status": {"digest": "d", "counts": {"train": 1}, "classes": ["a"], "bytes": 9}}
    assert prepare_status("start", {}) is None


def test_merge_follows_rfc7386() -> None:
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3, "c": None}, "e": 5}) == {"a": {"b": 3}, "d": 1, "e": 5}


def test_termination_log(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("TAUON_TERMINATION_LOG", str(path))
    write_termination_log({"event": "finished", "result": "succeeded", "metrics": {"accuracy": 0.97}})
    assert json.loads(path.read_text())["metrics"]["accuracy"] == 0.97
    write_termination_log({"event": "finished", "result": "succeeded", "huge": "x" * 10_000})
    assert json.loads(path.read_text()) == {"event": "finished", "result": "succeeded"}
