"""Dynamic batching behind a bounded queue: requests wait at most ``max_wait_ms`` to share one model call.

:class:`Batcher` owns an :class:`asyncio.Queue` of at most ``max_queue`` pending items. :meth:`Batcher.submit`
never waits for room: a full queue raises :class:`QueueFull` at once (the server answers 503 with Retry-After),
so the backlog, and with it the latency of every accepted request, stays bounded. One task takes the first
waiting item, then up to ``max_batch_size - 1`` more that arrive within ``max_wait_ms``, and runs the batch on one
worker thread (the event loop keeps accepting and decoding meanwhile). An exception in a batch fails the requests
of that batch only; the next batch runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol


class QueueFull(Exception):
    """The queue holds ``max_queue`` items: the request is refused rather than queued."""


class BatchObserver(Protocol):
    """What the batcher reports (the metrics implement it)."""

    def batch_done(self, size: int, seconds: float) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Run ``fn(list_of_payloads) -> list_of_results`` on batches of concurrent submissions.

    Args:
        fn: called on a worker thread with up to ``max_batch_size`` payloads; returns one result per payload.
        max_batch_size: most payloads per call (1 turns batching off).
        max_wait_ms: how long the first payload of a batch waits for others to join it.
        max_queue: most payloads waiting (not counting the batch being run); more are refused with QueueFull.
        observer: told each batch's size and duration and the queue depth, or None.
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 4,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.fn = fn
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.observer = observer
        self.batch_seconds = 0.0  # a running estimate of one batch's duration, for Retry-After
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def depth(self) -> int:
        """Payloads waiting now."""
        return self._queue.qsize() if self._queue is not None else 0

    def retry_after(self) -> int:
        """Seconds after which a refused client may try again: the time to run a full queue, at least 1."""
        batches = -(-self.max_queue // self.max_batch_size)
        return max(1, round(batches * self.batch_seconds))

    async def start(self) -> None:
        """Create the queue and the batching task (call from the running event loop)."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-batch")
        self._task = asyncio.create_task(self._loop(), name="zoo-batcher")

    async def stop(self) -> None:
        """Stop the batching task; payloads still queued are failed (the server drains requests before this)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, payload: Any) -> Any:
        """Queue ``payload`` and wait for its result (see :meth:`submit_many`)."""
        return (await self.submit_many([payload]))[0]

    async def submit_many(self, payloads: Sequence[Any]) -> list[Any]:
        """Queue all of ``payloads`` (each may join a different batch) or none, and wait for their results.

        Raises:
            QueueFull: there is no room for all of them.
            Exception: whatever ``fn`` raised for a batch that held one of them.
        """
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if len(payloads) > self.max_queue - self.depth:
            raise QueueFull(f"{self.depth} of {self.max_queue} places in the queue are taken")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in payloads]
        for payload, future in zip(payloads, futures, strict=True):
            self._queue.put_nowait(_Item(payload, future))
        self._report_depth()
        return list(await asyncio.gather(*futures))

    def _report_depth(self) -> None:
        if self.observer is not None:
            self.observer.queue_depth(self.depth)

    async def _collect(self) -> list[_Item]:
        """The next batch: the first waiting item, then whatever joins within ``max_wait``."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                batch.append(
                    self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
        return [item for item in batch if not item.future.done()]  # a client that gave up is not computed

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._report_depth()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [item.payload for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the model returned {len(results)} results for {len(batch)} inputs")
            except Exception as error:  # noqa: BLE001 - the batch's requests get the error, the loop goes on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finally:
                self._timed(len(batch), time.perf_counter() - start)
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def _timed(self, size: int, seconds: float) -> None:
        self.batch_seconds = seconds if self.batch_seconds == 0 else 0.8 * self.batch_seconds + 0.2 * seconds
        if self.observer is not None:
            self.observer.batch_done(size, seconds)


__all__ = ["BatchObserver", "Batcher", "QueueFull"]
