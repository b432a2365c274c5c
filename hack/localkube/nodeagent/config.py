"""The agent's configuration: its node's name, capacity, labels and taints, the "image" every
container starts from, its kubelet endpoint and restart back-off."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AgentConfig:
    name: str
    kubeconfig: str
    state_dir: Path
    cpu: str = ""
    memory: str = ""
    pods: int = 110
    gpus: int = 0
    labels: dict = field(default_factory=dict)
    taints: list = field(default_factory=list)
    image_env: dict = field(default_factory=dict)
    # The "image": host paths every container sees at the same path, read-only, even under a
    # volume mounted above them (the checkout may live under /tmp, where pods mount emptyDirs).
    image_paths: list = field(default_factory=list)
    port: int = 0
    serving_cert: str = ""
    serving_key: str = ""
    client_ca: str = ""
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    lease_seconds: int = 40
    heartbeat: float = 10.0

    def capacity(self) -> dict:
        cpu = self.cpu or str(os.cpu_count() or 1)
        memory = self.memory
        if not memory:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory = f"{line.split()[1]}Ki"
        cap = {"cpu": cpu, "memory": memory or "1Gi", "pods": str(self.pods),
               "ephemeral-storage": f"{shutil.disk_usage(self.state_dir).total // 2**20}Mi"}
        if self.gpus:
            cap["nvidia.com/gpu"] = str(self.gpus)
        return cap
