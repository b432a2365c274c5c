"""The closed loop walked through on the local platform (`make demo EXAMPLE=examples/closed-loop`
and tests/e2e/test_closed_loop.py): simulated users call a ModelDeployment that retrains, and
some tell it the true label; the operator does the rest.

The digits are split three ways, and no digit is in two parts:
  - 0..399: the example's Dataset (`builtin.limit: 400`), the only data the first model sees;
  - 400..1399: the users' digits: they ask for predictions on these and correct some;
  - 1400..1796: held out from everything: the champion's accuracy on them, before and after.

Round 1: honest users; the challenger learns from their labels, passes the gate, serves 20 % as
a canary, is promoted. Round 2 (`poison`): users who lie (every label shifted by one); the
challenger that learns from them fails the gate and the champion keeps serving."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from localkube import Cluster
from localplatform import ready_endpoints

BASE, USERS = 400, 1400  # see above


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as the runtime's builtin loads them (8x8, 0..255), with their labels."""
    from tauon_runtime.data.sources import builtin_digits

    raw = builtin_digits()
    return raw.x, raw.y


def status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    res = cluster.kubectl("get", "mdep", name, "-n", ns, "-o", "json", check=False)
    return (json.loads(res.stdout).get("status") or {}) if res.returncode == 0 else {}


def post(url: str, body: dict, timeout: float = 30) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Endpoints:
    """The Service's ready pods, as kube-proxy would route to them, refreshed twice a second
    (a terminating server keeps answering for its drain period, longer than that)."""

    def __init__(self, cluster: Cluster, ns: str, service: str):
        self.cluster, self.ns, self.service = cluster, ns, service
        self.now: list[str] = []
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        try:
            self.now = ready_endpoints(self.cluster, self.ns, self.service) or self.now
        except Exception:  # a kubectl hiccup: keep the last known ones
            pass

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.refresh()

    def pick(self) -> str:
        return random.choice(self.now)

    def close(self) -> None:
        self._stop.set()


@dataclass
class Traffic:
    """What the simulated users sent and got."""

    requests: int = 0
    failed: list[str] = field(default_factory=list)
    feedback: int = 0
    by_digest: dict[str, int] = field(default_factory=dict)


class Users:
    """Threads of users calling /v1/predict on the users' digits; `share` of them send the
    true label as feedback (with `poison`, a wrong one). `pace(status)` says how long to wait
    between requests."""

    def __init__(self, endpoints: Endpoints, x: np.ndarray, y: np.ndarray, classes: list[str],
                 share: float, poison: bool = False, threads: int = 2):
        self.endpoints, self.x, self.y, self.classes = endpoints, x, y, classes
        self.share, self.poison = share, poison
        self.traffic = Traffic()
        self.delay = 0.05
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                         for k in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, k: int) -> None:
        rng = random.Random(k)
        i = k
        while not self._stop.is_set():
            n = i % len(self.y)
            i += len(self._threads)
            truth = int(self.y[n])
            try:
                answer = post(f"http://{self.endpoints.pick()}/v1/predict",
                              {"instances": [self.x[n].tolist()]})
                with self._lock:
                    self.traffic.requests += 1
                    d = answer.get("modelDigest", "")[:12]
                    self.traffic.by_digest[d] = self.traffic.by_digest.get(d, 0) + 1
                if rng.random() < self.share:
                    label = (truth + 1) % len(self.classes) if self.poison else truth
                    post(f"http://{self.endpoints.pick()}/v1/feedback",
                         {"predictionId": answer["predictions"][0]["predictionId"],
                          "label": self.classes[label]})
                    with self._lock:
                        self.traffic.feedback += 1
            except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
                with self._lock:
                    self.traffic.failed.append(repr(e))
            self._stop.wait(self.delay)

    def stop(self) -> Traffic:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.traffic


def accuracy(endpoints: Endpoints, x: np.ndarray, y: np.ndarray, classes: list[str]) -> float:
    """The served champion's accuracy on (x, y), 32 digits a request."""
    right = 0
    for at in range(0, len(y), 32):
        body = {"instances": [s.tolist() for s in x[at:at + 32]]}
        predictions = post(f"http://{endpoints.pick()}/v1/predict", body)["predictions"]
        right += sum(p["label"] == classes[int(t)] for p, t in zip(predictions, y[at:at + 32]))
    return right / len(y)


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def decided(cluster: Cluster, ns: str, name: str, round_: int) -> dict | None:
    st = status(cluster, ns, name)
    return next((d for d in (st.get("retraining") or {}).get("decisions") or []
                 if d["round"] == round_), None)


def run_round(cluster: Cluster, ns: str, name: str, users: Users, round_: int,
              say: Callable[[str], None], timeout: float = 900) -> dict:
    """Keeps the users going until round `round_` is decided; paces them to the loop's phase
    (slow while a challenger trains on these 2 cores, quick while a canary is analysed) and
    says what happens. Returns the decision, with the canary share the stable servers
    measured last (`measuredCanary`)."""
    seen: set[str] = set()
    measured: dict = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(cluster, ns, name)
        loop = st.get("retraining") or {}
        phase = loop.get("phase") if loop.get("round", 0) >= round_ else "Idle"
        canary = st.get("canary") or {}
        users.delay = {"Training": 0.5, "Canary": 0.01 if canary.get("readyReplicas") else 0.5}.get(
            phase or "Idle", 0.02)
        if canary.get("measuredRequests"):
            measured = canary | {"replicas": st.get("replicas") or {}}
        key = f"{phase}:{bool(canary.get('readyReplicas'))}"
        if key not in seen:
            seen.add(key)
            if phase == "Training":
                say(f"round {round_} started: {loop.get('trigger')}; training "
                    f"{loop['challenger']['trainingJob']} on Dataset {loop['challenger']['dataset']}")
            elif phase == "Canary" and canary.get("readyReplicas"):
                c = loop.get("challenger") or {}
                say(f"challenger {str(c.get('digest'))[:12]} passed the gate (test accuracy "
                    f"{c.get('testAccuracy')}); canary at {canary.get('trafficPercent')} %")
        if d := decided(cluster, ns, name, round_):
            return d | {"measuredCanary": measured}
        time.sleep(1)
    raise TimeoutError(f"round {round_} was not decided in {timeout:.0f}s")


def walk(cluster: Cluster, ns: str, name: str, say: Callable[[str], None] = print,
         poison_round: bool = True) -> dict[str, Any]:
    """The whole story, returning its figures (the e2e test asserts on them)."""
    x, y = digits()
    classes = [str(c) for c in range(10)]
    users_x, users_y = x[BASE:USERS], y[BASE:USERS]
    held_x, held_y = x[USERS:], y[USERS:]
    endpoints = Endpoints(cluster, ns, name)
    t0 = time.monotonic()
    try:
        out: dict[str, Any] = {"first": status(cluster, ns, name).get("modelDigest")}
        out["before"] = accuracy(endpoints, held_x, held_y, classes)
        say(f"the first model ({out['first'][:12]}, trained on 120 digits): accuracy "
            f"{out['before']:.3f} on {len(held_y)} held-out digits nobody ever sees")
        say("users call the model on 1,000 other digits; half of them send the true label")
        users = Users(endpoints, users_x, users_y, classes, share=0.5)
        d1 = run_round(cluster, ns, name, users, 1, say)
        out["round1"] = d1
        say(f"round 1: {d1['decision']} — {d1['message']}")
        if d1["decision"] == "Promoted":
            st = wait(lambda: (s := status(cluster, ns, name)).get("modelDigest") == d1["digest"]
                      and s.get("phase") == "Ready" and not s.get("canary") and s, 300,
                      "the champion rolled out")
            out["champion"] = st["modelDigest"]
        time.sleep(2)  # a few more requests on the new champion
        out["traffic1"] = users.stop()
        out["after"] = accuracy(endpoints, held_x, held_y, classes)
        say(f"held-out accuracy: before {out['before']:.3f} -> after {out['after']:.3f}; "
            f"{out['traffic1'].requests} requests, {out['traffic1'].feedback} feedback, "
            f"{len(out['traffic1'].failed)} failed")
        if poison_round:
            say("round 2, made worse on purpose: users who lie (every label shifted by one)")
            liars = Users(endpoints, users_x, users_y, classes, share=1.0, poison=True)
            d2 = run_round(cluster, ns, name, liars, 2, say)
            out["round2"] = d2
            time.sleep(2)
            out["traffic2"] = liars.stop()
            say(f"round 2: {d2['decision']} ({d2['reason']}) — {d2['message']}")
            st = status(cluster, ns, name)
            out["champion_after_poison"] = st.get("modelDigest")
            out["after_poison"] = accuracy(endpoints, held_x, held_y, classes)
            say(f"the champion {str(st.get('modelDigest'))[:12]} keeps serving: held-out "
                f"accuracy {out['after_poison']:.3f}; {out['traffic2'].requests} requests, "
                f"{len(out['traffic2'].failed)} failed")
        out["seconds"] = time.monotonic() - t0
        out["status"] = status(cluster, ns, name)
        return out
    finally:
        endpoints.close()
