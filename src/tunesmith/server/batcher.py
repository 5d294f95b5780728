"""One model worker thread that decodes whatever is waiting together.

HTTP threads submit a `Job` (all the sequences of one request) and read its events; the worker
takes every sequence waiting at that moment (up to `max_batch_size`) and decodes them as one
batch with `TextGenerator.stream_batch`, handing each piece of text to its job. Sequences are
seeded one by one, so how requests happen to be batched never changes what they produce.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tunesmith.generate import Request, Sample, TextGenerator


class JobTimeout(Exception):
    """A job did not finish within its deadline; it has been cancelled."""


class JobFailed(Exception):
    """Decoding a job's batch failed, or the server shut down before it finished."""

    def __init__(self, message: str, shutting_down: bool = False):
        super().__init__(message)
        self.shutting_down = shutting_down


def _shutting_down() -> JobFailed:
    return JobFailed("the server is shutting down", shutting_down=True)


class Job:
    """The sequences of one HTTP request and the events they produce, in order."""

    def __init__(self, requests: list[Request], deadline: float):
        self.requests = requests
        self.deadline = deadline  # time.monotonic()
        self.cancelled = threading.Event()
        self._events: queue.SimpleQueue = queue.SimpleQueue()

    def cancel(self) -> None:
        """Stop decoding this job's sequences (the client left or the deadline passed)."""
        self.cancelled.set()

    @property
    def done(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() >= self.deadline

    def events(
        self, still_wanted: Callable[[], bool] | None = None
    ) -> Iterator[tuple[int, str, Sample | None]]:
        """(choice, new text, None) as text arrives, (choice, last text, Sample) as each
        choice ends. Raises JobTimeout at the deadline and JobFailed if decoding failed;
        while waiting, asks still_wanted() every half second and cancels when it says no
        (raising ConnectionResetError: the client went away)."""
        remaining = len(self.requests)
        while remaining:
            left = self.deadline - time.monotonic()
            try:
                event = self._events.get(timeout=max(0.0, min(left, 0.5) if still_wanted else left))
            except queue.Empty:
                if time.monotonic() < self.deadline:
                    if still_wanted is not None and not still_wanted():
                        self.cancel()
                        raise ConnectionResetError("the client went away") from None
                    continue
                self.cancel()
                raise JobTimeout("the request timed out") from None
            if isinstance(event, BaseException):
                self.cancel()
                raise event
            remaining -= event[2] is not None
            yield event

    def _put(self, event) -> None:
        self._events.put(event)


@dataclass
class _Item:
    job: Job
    choice: int


class Batcher:
    """Decodes submitted jobs on one worker thread, batching what waits together.

    `batch_wait` is how long an idle worker lingers after an arrival for others that come
    with it (requests sent together rarely land in the same millisecond)."""

    def __init__(self, generator: TextGenerator, max_batch_size: int = 16, batch_wait=0.01):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.batches = 0  # decoded so far, with their sizes: for tests and the benchmark
        self.largest_batch = 0
        self._waiting: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._decoding: list[_Item] = []  # the batch on the model now
        self._thread = threading.Thread(target=self._work, name="tunesmith-model", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def waiting(self) -> int:
        """Sequences waiting for the model (not counting those nobody waits for any more)."""
        with self._cond:
            return sum(not item.job.done for item in self._waiting)

    def submit(self, requests: list[Request], timeout: float) -> Job:
        job = Job(requests, time.monotonic() + timeout)
        with self._cond:
            if self._closing:
                raise _shutting_down()
            self._waiting.extend(_Item(job, i) for i in range(len(requests)))
            self._cond.notify()
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: the batch being decoded is abandoned, waiting jobs fail."""
        with self._cond:
            self._closing = True
            dropped = list(self._waiting) + self._decoding
            self._waiting.clear()
            self._cond.notify()
        for item in dropped:
            item.job._put(_shutting_down())
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._decode(batch)

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._closing and not self._live_waiting():
                self._cond.wait()
            if self._closing:
                return None
            # Linger while arrivals keep coming (clients answered by one batch come back a few
            # ms apart), batch_wait after the latest one, 5 x batch_wait in all at most.
            now = time.monotonic()
            quiet_at, give_up_at = now + self.batch_wait, now + 5 * self.batch_wait
            while len(self._waiting) < self.max_batch_size and not self._closing:
                left = min(quiet_at, give_up_at) - time.monotonic()
                if left <= 0:
                    break
                before = len(self._waiting)
                self._cond.wait(left)
                if len(self._waiting) > before:
                    quiet_at = time.monotonic() + self.batch_wait
            batch = []
            while self._waiting and len(batch) < self.max_batch_size:
                item = self._waiting.popleft()
                if not item.job.done:  # cancelled or past its deadline: its reader is gone
                    batch.append(item)
            self._decoding = batch
            return batch

    def _live_waiting(self) -> bool:
        while self._waiting and self._waiting[0].job.done:
            self._waiting.popleft()
        return bool(self._waiting)

    def _decode(self, batch: list[_Item]) -> None:
        if not batch:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        stream = self.generator.stream_batch([it.job.requests[it.choice] for it in batch])
        finished = [False] * len(batch)
        try:
            for i, text, sample in stream:
                item = batch[i]
                item.job._put((item.choice, text, sample))
                finished[i] = sample is not None
                if self._closing or all(
                    it.job.done for it, f in zip(batch, finished, strict=True) if not f
                ):
                    break  # nobody is waiting for the rest of this batch
        except Exception as e:  # keep serving: the batch's jobs get the error instead
            error = JobFailed(f"generation failed: {type(e).__name__}: {e}")
            for item, f in zip(batch, finished, strict=True):
                if not f:
                    item.job._put(error)
        finally:
            stream.close()
            with self._cond:
                self._decoding = []
