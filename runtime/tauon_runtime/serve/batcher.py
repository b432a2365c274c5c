"""Dynamic batching: many concurrent requests, one forward pass.

Requests are queued; one worker task takes the first waiting request, then keeps collecting
until the batch holds ``max_batch_size`` samples or ``max_latency_ms`` has passed since that
first request, runs a single forward pass in a one-thread executor (so the event loop keeps
accepting and parsing requests meanwhile), and resolves every request's future with its slice
of the output. While one batch runs the next one fills up, so under load batches grow by
themselves. ``max_batch_size=1`` turns batching off.

The wait is only spent when it can pay. The batcher tracks how many requests are in the
server at once (announced by the handlers through :meth:`DynamicBatcher.arrival` before their
bodies are read, until answered) and remembers the recent peak. A batch stops waiting when the
queue is empty, nothing is being read, and it already holds as many requests as recently were
in flight together: a lone client gets unbatched latency, 32 concurrent clients get batches of
about 32.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

PEAK_WINDOW_S = 0.5  # how long a concurrency peak is remembered (one to two windows)

__all__ = ["BatcherClosed", "DynamicBatcher", "Overloaded"]


class Overloaded(RuntimeError):
    """The queue is full: the client should retry later (503)."""


class BatcherClosed(RuntimeError):
    """The server is shutting down."""


class Arrival:
    """A request on its way to :meth:`DynamicBatcher.submit` (see the module docstring)."""

    def __init__(self, batcher: DynamicBatcher) -> None:
        self._batcher = batcher
        self._reading = False

    def __enter__(self) -> Arrival:
        self._reading = True
        self._batcher._arriving += 1
        self._batcher._enter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reading:  # never submitted (bad input): it leaves the server here
            self._submitted()
            self._batcher._leave()

    def _submitted(self) -> None:
        if self._reading:
            self._reading = False
            self._batcher._arriving -= 1


@dataclass
class _Pending:
    inputs: np.ndarray  # [n, C, H, W], float32, preprocessed
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0])


class DynamicBatcher:
    """Collects requests into batches for ``forward``.

    ``forward`` takes a float32 array [N, C, H, W] and returns an array [N, K]; it runs in a
    dedicated thread, one batch at a time. ``on_batch(size, seconds)`` is called after each
    forward pass (metrics).
    """

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int = 32,
        max_latency_ms: float = 5.0,
        max_queue: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._forward = forward
        self.max_batch_size = max_batch_size
        self.max_latency = max(0.0, max_latency_ms) / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._carry: _Pending | None = None  # taken from the queue but did not fit the last batch
        self._closing = False
        self._busy = False
        self._arriving = 0  # requests announced, body still being read
        self._inflight = 0  # requests announced or submitted, not yet answered
        self._peak = (0, 0)  # peak in-flight of the current and of the previous window
        self._window_start = time.monotonic()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="tauon-forward"
        )
        self._worker = asyncio.create_task(self._run(), name="tauon-batcher")

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Refuse new requests, answer those queued (up to ``drain_seconds``), then stop."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_seconds
        while (
            (self.depth or self._busy)
            and loop.time() < deadline
            and self._worker
            and not self._worker.done()
        ):
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        pending = [self._carry] if self._carry else []
        self._carry = None
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for p in pending:
            if not p.future.done():
                p.future.set_exception(BatcherClosed("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    @property
    def depth(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + (1 if self._carry else 0)

    def arrival(self) -> Arrival:
        """``with batcher.arrival() as a: ...; await batcher.submit(x, a)``: tells the batcher
        a request is being read, so that a forming batch waits for it (up to the max delay)."""
        return Arrival(self)

    def _enter(self) -> None:
        self._inflight += 1
        now = time.monotonic()
        if now - self._window_start > PEAK_WINDOW_S:
            current, _ = self._peak
            self._peak = (0, current if now - self._window_start < 2 * PEAK_WINDOW_S else 0)
            self._window_start = now
        current, previous = self._peak
        self._peak = (max(current, self._inflight), previous)

    def _leave(self) -> None:
        self._inflight -= 1

    @property
    def recent_concurrency(self) -> int:
        return max(self._peak)

    async def submit(self, inputs: np.ndarray, arrival: Arrival | None = None) -> np.ndarray:
        """Queue ``inputs`` [n, C, H, W] and wait for its outputs [n, K].

        Cancelling the wait (a request timeout) drops the request from its batch if the batch
        has not been formed yet.
        """
        if arrival is None:
            self._enter()
        else:
            arrival._submitted()
        try:
            if self._closing or self._queue is None or self._worker is None or self._worker.done():
                raise BatcherClosed("the server is not accepting inference requests")
            if self._queue.qsize() >= self.max_queue:
                raise Overloaded(f"{self._queue.qsize()} requests already queued")
            pending = _Pending(inputs, asyncio.get_running_loop().create_future())
            self._queue.put_nowait(pending)
            self._on_queue_depth(self.depth)
            return await pending.future
        finally:
            self._leave()

    def _worth_waiting(self, requests: int) -> bool:
        return self._arriving > 0 or requests < self.recent_concurrency

    async def _next(self, deadline: float | None, requests: int) -> _Pending | None:
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if deadline is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0 or not self._worth_waiting(requests):
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch: list[_Pending] = []
        size = 0
        deadline = None
        while size < self.max_batch_size:
            item = await self._next(deadline, len(batch))
            if item is None:
                break
            if item.future.done():  # the client gave up (timeout) before we got to it
                continue
            if batch and size + item.n > self.max_batch_size:
                self._carry = item
                break
            if deadline is None:
                deadline = loop.time() + self.max_latency
            batch.append(item)
            size += item.n
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._on_queue_depth(self.depth)
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                continue
            inputs = (
                batch[0].inputs if len(batch) == 1 else np.concatenate([p.inputs for p in batch])
            )
            started = time.perf_counter()
            self._busy = True
            try:
                outputs = await loop.run_in_executor(self._executor, self._forward, inputs)
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(BatcherClosed("the server is shutting down"))
                raise
            except Exception as exc:  # a failed forward fails its batch, never the worker
                log.exception("forward pass failed for a batch of %d", inputs.shape[0])
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._busy = False
            self._on_batch(int(inputs.shape[0]), time.perf_counter() - started)
            offset = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(outputs[offset : offset + p.n])
                offset += p.n
