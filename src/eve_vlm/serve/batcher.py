"""Dynamic batching: a worker thread turns whatever requests are queued into one `generate` batch.

An idle worker takes the oldest queued request, waits up to `batch_wait_s` for more that share
its decoding key (temperature, top_p, top_k), and runs up to `max_batch_size` of them as one
left-padded batch; each request keeps its own max_tokens, stop strings, stream and cancellation.
Requests that arrive meanwhile queue for the next batch. Results and streamed text go back to
the event loop of the request that asked, thread-safely.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..infer.engine import Generator, PreparedRequest
from ..infer.params import GenerationResult
from ..infer.stopping import CallbackStreamer

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The queue holds `max_queue` requests already."""


@dataclass
class Job:
    """One request travelling from the event loop to the worker and its results travelling back.

    `events` receives ("text", str) pieces when streaming, then ("done", GenerationResult) or
    ("error", Exception) exactly once.
    """

    prepared: PreparedRequest
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, value: Any) -> None:
        """Called from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            self.cancelled.set()


@dataclass
class BatcherStats:
    """Counters the worker keeps (read by GET /metrics, tests and benchmarks)."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    cancelled: int = 0
    generated_tokens: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)

    def record(self, results: list[GenerationResult]) -> None:
        self.requests += len(results)
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(results))
        self.batch_sizes[len(results)] += 1
        self.cancelled += sum(r.finish_reason == "cancelled" for r in results)
        self.generated_tokens += sum(r.completion_tokens for r in results)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "cancelled": self.cancelled, "generated_tokens": self.generated_tokens,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}


class DynamicBatcher:
    """The queue and the worker thread that drains it in batches."""

    def __init__(self, generator: Generator, max_batch_size: int = 16, batch_wait_s: float = 0.01,
                 max_queue: int = 64) -> None:
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._running: list[Job] = []

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        """Requests in the batch being decoded."""
        return len(self._running)

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="eve-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel the running batch, fail what is still queued, end the worker."""
        with self._cond:
            self._stopping = True
            pending, self._queue = list(self._queue), collections.deque()
            self._cond.notify_all()
        for job in pending:
            job.emit("error", RuntimeError("the server is shutting down"))
        for job in list(self._running):
            job.cancelled.set()
        if self._thread is not None:
            self._thread.join()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"{len(self._queue)} requests are queued already")
            self._queue.append(job)
            self._cond.notify_all()

    # --- worker ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        """Wait for a request, then gather up to max_batch_size with its key for batch_wait_s."""
        with self._cond:
            while not self._stopping and not self._live_head():
                self._cond.wait()
            if self._stopping:
                return None
            batch = [self._queue.popleft()]
            key = batch[0].prepared.params.decoding_key()
            deadline = time.monotonic() + self.batch_wait_s
            while True:
                self._take_matching(batch, key)
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch_size or remaining <= 0 or self._stopping:
                    return batch
                self._cond.wait(remaining)

    def _live_head(self) -> bool:
        """Drop cancelled requests from the front; whether a live one is left."""
        while self._queue and self._queue[0].cancelled.is_set():
            self._drop(self._queue.popleft())
        return bool(self._queue)

    def _drop(self, job: Job) -> None:
        """A request cancelled (its client left) before it reached the decoder."""
        self.stats.cancelled += 1
        job.emit("done", None)

    def _take_matching(self, batch: list[Job], key: tuple) -> None:
        keep: collections.deque[Job] = collections.deque()
        for job in self._queue:
            if job.cancelled.is_set():
                self._drop(job)
            elif len(batch) < self.max_batch_size and job.prepared.params.decoding_key() == key:
                batch.append(job)
            else:
                keep.append(job)
        self._queue = keep

    def _run(self, batch: list[Job]) -> None:
        streamers = [self._streamer(job) if job.stream else None for job in batch]
        self._running = batch
        started = time.perf_counter()
        try:
            results = self.generator.run([job.prepared for job in batch], streamers,
                                         [job.cancelled for job in batch])
        except Exception as e:  # a failure of the decoder (out of memory, ...): every request of it fails
            logger.exception("a batch of %d failed", len(batch))
            for job in batch:
                job.emit("error", e)
            return
        finally:
            self._running = []
        self.stats.record(results)
        logger.debug("batch of %d: %d tokens in %.2fs", len(batch), sum(r.completion_tokens for r in results),
                     time.perf_counter() - started)
        for job, result in zip(batch, results):
            job.emit("done", result)

    def _streamer(self, job: Job) -> CallbackStreamer:
        def on_text(text: str, _: bool) -> None:
            if text:
                job.emit("text", text)

        return CallbackStreamer(self.generator.tokenizer, job.prepared.params.stop, on_text)
