"""Progress reporting: JSON lines, and merge patches of the owner's status subresource."""

from __future__ import annotations

import http.server
import io
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tauon_runtime.data.prepare import status_patch as prepare_status
from tauon_runtime.report import Reporter, StatusReporter, compose, merge, write_termination_log
from tauon_runtime.train.loop import status_patch as train_status

TARGET = "tauon.dev/v1alpha1/namespaces/default/trainingjobs/mnist"


class FakeApiServer:
    """Records PATCH requests on 127.0.0.1 (the runtime's side of the API call, nothing more).

    `delay`: seconds each request takes to answer, as a slow or overloaded API server does; the
    request is recorded when it arrives.
    """

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.requests: list[dict] = []
        recorder, code = self.requests, status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                time.sleep(delay)
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


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def server_state(requests: list[dict]) -> dict:
    """The status as the API server holds it after applying the requests in order."""
    state: dict = {}
    for req in requests:
        state = merge(state, req["body"])
    return state


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
    events.close()  # sent from a background thread: wait for it
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
    wait_until(lambda: len(api.requests) == 1)  # the first patch goes at once
    for step in (1, 2, 3):  # inside the interval: held back, merged
        events.to_status("progress", {"epoch": 0, "step": step, "percent": step * 25.0})
    events.event("checkpoint", path="/out/checkpoints/step-00000003.pt", epoch=0, step=3)
    time.sleep(0.2)
    assert len(api.requests) == 1
    events.event("exported", location="/out/model", sha256="a" * 64, metrics={"accuracy": 0.97})
    wait_until(lambda: len(api.requests) == 2)  # a final event does not wait out the interval
    assert reporter.flush(timeout=10)
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
        assert reporter.close()  # done: sent, and failed
    finally:
        failing.close()
    unreachable = StatusReporter(TARGET, "http://127.0.0.1:1", log=logs.append, timeout=1)
    unreachable.patch({"status": {}}, final=True)
    unreachable.close()
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


# --- the background sender: a slow API server never slows training -----------------------------


def progress_patch(step: int) -> dict:
    return {"epoch": 0, "step": step, "totalSteps": 200, "percent": step / 2}


def test_a_slow_api_server_does_not_slow_reporting(sa_dir: Path) -> None:
    slow = FakeApiServer(delay=0.5)  # every request takes half a second to answer
    try:
        reporter = StatusReporter(TARGET, slow.url, token_path=sa_dir / "token", interval=0)
        events = Reporter(stream=io.StringIO(), status=reporter, status_for=train_status)
        started, worst = time.perf_counter(), 0.0
        for step in range(1, 201):
            t = time.perf_counter()
            events.to_status("progress", progress_patch(step))
            worst = max(worst, time.perf_counter() - t)
        events.event("checkpoint", path="/out/checkpoints/step-00000200.pt", epoch=0, step=200)
        elapsed = time.perf_counter() - started
        # A blocking client would have spent 0.5 s in the first call alone, and 100 s in all.
        assert elapsed < 0.25 and worst < 0.1, (elapsed, worst)
        assert len(slow.requests) <= 2  # what the thread managed meanwhile; the rest waits, merged
        assert reporter.close(timeout=5)
    finally:
        slow.close()
    assert len(slow.requests) <= 4  # 201 patches, coalesced
    state = server_state(slow.requests)["status"]
    assert state["progress"]["step"] == 200 and state["latestCheckpoint"].endswith("200.pt")


def test_the_last_state_arrives_after_close() -> None:
    slow = FakeApiServer(delay=0.3)
    try:
        reporter = StatusReporter(TARGET, slow.url, interval=60)  # throttled: nothing more before close
        events = Reporter(stream=io.StringIO(), status=reporter, status_for=train_status)
        events.event("start", epoch=0, totalEpochs=1, step=0, totalSteps=200, percent=0.0, etaSeconds=None)
        wait_until(lambda: len(slow.requests) == 1)  # on the wire when the rest comes in
        for step in range(1, 201):
            events.to_status("progress", progress_patch(step))
        events.close()  # waits for the request on the wire, then sends the last state
        assert len(slow.requests) == 2
        assert slow.requests[-1]["body"]["status"]["progress"]["step"] == 200
        assert server_state(slow.requests)["status"]["progress"] == {
            "epoch": 0, "totalEpochs": 1, "step": 200, "totalSteps": 200, "percent": 100.0}
    finally:
        slow.close()


def test_close_is_bounded_when_the_api_server_does_not_answer_in_time() -> None:
    stuck, logs = FakeApiServer(delay=3), []
    try:
        reporter = StatusReporter(TARGET, stuck.url, interval=0, log=logs.append)
        reporter.patch({"status": {"progress": {"step": 1}}})
        started = time.monotonic()
        assert reporter.close(timeout=0.5) is False
        assert time.monotonic() - started < 2 and "not sent within 0.5s" in logs[-1]
    finally:
        stuck.close()


def test_patches_waiting_behind_a_slow_request_coalesce_without_losing_a_field() -> None:
    slow = FakeApiServer(delay=0.3)
    patches = [
        {"status": {"progress": {"step": 0, "etaSeconds": 9}}},
        {"status": {"progress": {"step": 1}, "latestCheckpoint": "/c/1"}},
        {"status": {"metrics": {"latest": {"accuracy": 0.5}}}},
        {"status": {"progress": {"step": 2, "etaSeconds": None}}},  # a deletion must survive too
        {"status": {"metrics": {"best": {"accuracy": 0.5}}, "latestCheckpoint": "/c/2"}},
        {"status": {"progress": {"step": 3}}},
    ]
    try:
        reporter = StatusReporter(TARGET, slow.url, interval=0)
        reporter.patch(patches[0])
        wait_until(lambda: len(slow.requests) == 1)
        for body in patches[1:]:
            reporter.patch(body)
        assert reporter.close()
    finally:
        slow.close()
    assert len(slow.requests) == 2  # the five that waited went as one
    assert slow.requests[1]["body"] == {"status": {
        "progress": {"step": 3, "etaSeconds": None}, "latestCheckpoint": "/c/2",
        "metrics": {"latest": {"accuracy": 0.5}, "best": {"accuracy": 0.5}}}}
    one_by_one: dict = {}
    for body in patches:
        one_by_one = merge(one_by_one, body)
    assert server_state(slow.requests) == one_by_one


def test_compose_sends_what_the_patches_one_by_one_would() -> None:
    """Property (seeded, bounded): for status-shaped patches (objects stay objects, leaves are
    numbers or null), applying compose(a, b) equals applying a, then b."""
    rng = random.Random(17)

    def leaves() -> dict:
        return {k: rng.choice([None, rng.randint(0, 9)]) for k in rng.sample("abcd", rng.randint(0, 3))}

    def patch() -> dict:
        body = leaves()
        for branch in rng.sample(["progress", "metrics"], rng.randint(0, 2)):
            body[branch] = {**leaves(), **({"best": leaves()} if rng.random() < 0.5 else {})}
        return body

    for _ in range(500):
        state, a, b = merge({}, patch()), patch(), patch()
        assert merge(state, compose(a, b)) == merge(merge(state, a), b), (state, a, b)
