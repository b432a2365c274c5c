"""The state the agent keeps per container (and per probe of a container), as a pod worker
drives it: the process, its restarts and back-off, its state as containerStatuses show it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field


@dataclass
class Probe:
    kind: str
    spec: dict
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    ok: bool | None = None  # the current verdict (None: not decided yet)


@dataclass
class Container:
    spec: dict
    init: bool = False
    restart_policy: str = "Always"
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_count: int = 0
    attempts: int = 0  # how many times it was started (the log file index)
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    done: bool = False
    backoff_until: float = 0.0
    backoff: float = 0.0
    ready: bool = False
    started: bool = False
    probes: dict = field(default_factory=dict)
    kill_reason: str = ""

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None
