"""Pod addresses: each pod gets its own loopback address (status.podIP)."""

from __future__ import annotations

import threading


class IpPool:
    """127.0.0.2 ... 127.0.0.254, then 127.0.1.1 ...: unique among live pods, handed out
    round-robin so a freed address is not reused at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_uid: dict[str, str] = {}
        self._next = 0

    @staticmethod
    def _nth(n: int) -> str:
        n += 2  # skip 127.0.0.0 and 127.0.0.1
        return f"127.0.{n // 255}.{n % 255}"

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        with self._lock:
            if uid in self._by_uid:
                return self._by_uid[uid]
            used = set(self._by_uid.values())
            if preferred and preferred.startswith("127.") and preferred != "127.0.0.1" \
                    and preferred not in used:
                self._by_uid[uid] = preferred
                return preferred
            for _ in range(255 * 250):
                ip = self._nth(self._next)
                self._next = (self._next + 1) % (255 * 250)
                if ip.endswith(".0") or ip in used:
                    continue
                self._by_uid[uid] = ip
                return ip
            raise RuntimeError("no free pod address")

    def release(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)
