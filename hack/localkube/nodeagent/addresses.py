"""Pod addresses: each pod gets its own loopback address (status.podIP).

Every node agent on this machine takes its own block, 127.<block>.0.0/16 (all of 127/8 is
loopback on Linux), claimed machine-wide and kept in its state directory across restarts: two
agents (the two test workers' platforms, a demo beside a test run) once handed out the same
address, and a request for one cluster's server was answered by the other's."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from localkube.procutil import claim

BLOCKS = range(1, 255)


def claim_block(state_dir: Path | None = None) -> int:
    """This agent's block: the one its state directory remembers when no other live process
    holds it, else a free one (remembered there)."""
    remembered = state_dir / "address-block" if state_dir else None
    try:
        block = int(remembered.read_text()) if remembered else 0
    except (OSError, ValueError):
        block = 0
    if block not in BLOCKS or not claim(f"pod-addresses-{block}"):
        for block in random.sample(BLOCKS, len(BLOCKS)):
            if claim(f"pod-addresses-{block}"):
                break
        else:
            raise RuntimeError("every block of pod addresses is held by another live node agent")
    if remembered:
        remembered.write_text(str(block))
    return block


class IpPool:
    """127.<block>.0.1 ... 127.<block>.0.254, then 127.<block>.1.1 ...: unique among live
    pods, handed out round-robin so a freed address is not reused at once."""

    SIZE = 254 * 254

    def __init__(self, block: int = 1):
        self.block = block
        self._lock = threading.Lock()
        self._by_uid: dict[str, str] = {}
        self._next = 0

    def _nth(self, n: int) -> str:
        return f"127.{self.block}.{n // 254}.{n % 254 + 1}"

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        with self._lock:
            if uid in self._by_uid:
                return self._by_uid[uid]
            used = set(self._by_uid.values())
            if preferred and preferred.startswith("127.") and preferred != "127.0.0.1" \
                    and preferred not in used:
                self._by_uid[uid] = preferred
                return preferred
            for _ in range(self.SIZE):
                ip = self._nth(self._next)
                self._next = (self._next + 1) % self.SIZE
                if ip in used:
                    continue
                self._by_uid[uid] = ip
                return ip
            raise RuntimeError("no free pod address")

    def release(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)
