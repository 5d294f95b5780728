"""One model worker thread running a continuous batch (engine.py) for every request.

HTTP handlers (on the event loop) submit a `Job` (all the sequences of one request) and await
its events. A request that arrives while others decode joins at the next step instead of
waiting for the batch to finish (up to `max_batch_size` sequences in the batch): its prompt
goes through the model in that step's own forward pass, beside the batch's next tokens, so
the weights are read once for both, and its first token is drawn before theirs. That pass
costs more than the prompt's own prefill would, so a newcomer joins only when its first token
still comes no later than a request alone would see it (its prefill plus two decode steps,
by the passes timed so far, pass_cost.py); otherwise, into an idle batch, and for prompts
whose log-probabilities are asked for, newcomers are prefilled first, then whatever arrived
during that prefill.
With `continuous=False` the worker admits only into an empty batch (static batching, kept for
the benchmark's comparison).
Sequences are seeded one by one, so how requests happen to be batched never changes what
they produce.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tunesmith.server.engine import DecodeBatch, Produced, SequenceSpec, TokenLogprob
from tunesmith.server.pass_cost import PassCost
from tunesmith.textstream import TextTracker
from tunesmith.tokenizer import GPT2Tokenizer


class JobTimeout(Exception):
    """A job did not finish within its deadline; it has been cancelled."""


class JobFailed(Exception):
    """Decoding a job's batch failed, or the server shut down before it finished."""

    def __init__(self, message: str, shutting_down: bool = False):
        super().__init__(message)
        self.shutting_down = shutting_down


class ClientGone(Exception):
    """The job was cancelled because nobody waits for it any more."""


def _shutting_down() -> JobFailed:
    return JobFailed("the server is shutting down", shutting_down=True)


@dataclass
class SequenceRequest:
    """One sequence of a job: what the model decodes and how its text is cut."""

    spec: SequenceSpec
    stops: tuple[str, ...] = ()
    include_stop: bool = False


@dataclass
class Event:
    """What one choice of a job produced since its last event."""

    choice: int
    text: str  # new text that can no longer change
    new_tokens: int = 0  # tokens generated since the last event (the end-of-text one too)
    tokens: list[TokenLogprob] = field(default_factory=list)  # with logprobs when asked
    prompt_logprobs: list[TokenLogprob] | None = None  # with the first event, when asked
    finish_reason: str | None = None  # "eos", "stop" or "length" on the last event


class Job:
    """The sequences of one HTTP request and the events they produce, in order."""

    def __init__(self, sequences: list[SequenceRequest], deadline: float):
        self.sequences = sequences
        self.deadline = deadline  # time.monotonic()
        self.cancelled = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        """Stop decoding this job's sequences (the client left or the deadline passed)."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._put(ClientGone("the request was cancelled"))

    @property
    def done(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() >= self.deadline

    async def events(self) -> AsyncIterator[Event]:
        """Events as text arrives, the last of each choice with its finish_reason. Raises
        JobTimeout at the deadline, JobFailed if decoding failed, ClientGone if cancelled."""
        remaining = len(self.sequences)
        while remaining:
            try:
                left = max(0.0, self.deadline - time.monotonic())
                event = await asyncio.wait_for(self._events.get(), left)
            except asyncio.TimeoutError:
                self.cancel()
                raise JobTimeout("the request timed out") from None
            if isinstance(event, BaseException):
                self.cancelled.set()
                raise event
            remaining -= event.finish_reason is not None
            yield event

    def _put(self, event: Event | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:
            pass  # the event loop has closed: nobody is listening


@dataclass(eq=False)
class _Item:
    job: Job
    choice: int
    text: TextTracker | None = None
    arrived: float = field(default_factory=time.monotonic)


def _spec(item: _Item) -> SequenceSpec:
    return item.job.sequences[item.choice].spec


def _longest(specs: list[tuple[int, SequenceSpec]]) -> int:
    return max((len(s.prompt_ids) for _, s in specs), default=0)


class Batcher:
    """Decodes submitted jobs on one worker thread, as one continuous batch.

    `batch_wait` is how long an idle worker lingers after an arrival for others that come
    with it (requests sent together rarely land in the same millisecond)."""

    def __init__(
        self,
        generator,
        max_batch_size: int = 16,
        batch_wait: float = 0.01,
        continuous: bool = True,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.generator = generator
        self.tokenizer: GPT2Tokenizer = generator.tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.continuous = continuous
        self.steps = 0  # decode steps so far, and the most sequences one decoded together
        self.largest_batch = 0
        self._waiting: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._batch: DecodeBatch | None = None
        self._running: dict[int, _Item] = {}  # id(item) -> item, for the sequences in the batch
        self.pass_cost = PassCost()  # the model's passes, timed: whether newcomers can join
        self._thread = threading.Thread(target=self._work, name="tunesmith-model", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def waiting(self) -> int:
        """Sequences waiting for the model (not counting those nobody waits for any more)."""
        with self._cond:
            return sum(not item.job.done for item in self._waiting)

    @property
    def batch_size(self) -> int:
        """Sequences being decoded now."""
        return len(self._running)

    def submit(self, sequences: list[SequenceRequest], timeout: float) -> Job:
        """Queue a job (call from the event loop that will read its events)."""
        job = Job(sequences, time.monotonic() + timeout)
        with self._cond:
            if self._closing:
                raise _shutting_down()
            self._waiting.extend(_Item(job, i) for i in range(len(sequences)))
            self._cond.notify()
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: the batch being decoded is abandoned, waiting jobs fail."""
        with self._cond:
            self._closing = True
            dropped = list(self._waiting) + list(self._running.values())
            self._waiting.clear()
            self._cond.notify()
        for item in dropped:
            item.job._put(_shutting_down())
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _work(self) -> None:
        self._batch = self._new_batch()
        while True:
            newcomers = self._take()
            if newcomers is None:
                return
            try:
                joining = self._admit(newcomers)
                self._drop_abandoned()
                joining = [i for i in joining if id(i) in self._running]
                if len(self._batch) or joining:
                    self._step(joining)
            except Exception as e:  # keep serving: the batch's jobs get the error instead
                self._fail(JobFailed(f"generation failed: {type(e).__name__}: {e}"))

    def _step(self, joining: list[_Item]) -> None:
        """A decode step of the batch, with `joining` newcomers prefilled in its pass; their
        first tokens go out before the running rows' are drawn. Every pass is timed."""
        self.steps += 1
        self.largest_batch = max(self.largest_batch, len(self._running))
        specs = [(id(i), _spec(i)) for i in joining]
        rows, stopped = len(self._batch), []
        started = time.monotonic()

        def joined(first: list[Produced]) -> None:
            tokens = rows + len(specs) * _longest(specs)
            self.pass_cost.record(tokens, rows + len(specs), time.monotonic() - started)
            stopped.extend(self._dispatch(first, joining, drop=False))

        produced = self._batch.step(specs, joined if specs else None)
        if not specs:
            self.pass_cost.record(rows, rows, time.monotonic() - started)
        self._dispatch(produced, [])
        if stopped:  # joiners whose first token met a stop string
            self._batch.drop(stopped)

    def _admit(self, newcomers: list[_Item]) -> list[_Item]:
        """Admit newcomers before the next step; return those that join it.

        Into a running batch, newcomers join the next step, their prompts in its own forward
        pass (one read of the weights for both), when their first tokens come in time that way
        (`_in_time`); otherwise, into an idle batch, and for prompts whose log-probabilities
        are asked for (echo: every position's logits), they are prefilled now. Prefill first:
        those that arrive during a prefill are admitted the same way before the next step, so
        that a request arriving mid-batch waits for one step at most, not for a step after each
        prefill. At most max_batch_size sequences are admitted between two steps, so a stream
        of short requests cannot stall the running ones."""
        admitted, joining = 0, []
        while newcomers:
            self.largest_batch = max(self.largest_batch, len(self._running))
            if len(self._batch) and self.continuous:
                plain = [i for i in newcomers if _spec(i).prompt_logprobs is None]
                if plain and self._in_time(plain):
                    joining = plain
                    newcomers = [i for i in newcomers if _spec(i).prompt_logprobs is not None]
            admitted += len(newcomers) + len(joining)
            if newcomers:
                specs = [(id(i), _spec(i)) for i in newcomers]
                started = time.monotonic()
                produced = self._batch.admit(specs)
                self.pass_cost.record(
                    len(specs) * _longest(specs), len(specs), time.monotonic() - started
                )
                self._dispatch(produced, newcomers)
            if joining or not self.continuous or admitted >= self.max_batch_size:
                return joining  # the step starts now: the joiners' timing counted on it
            with self._cond:
                newcomers = self._take_waiting(self.max_batch_size - admitted)
        return joining

    def _in_time(self, newcomers: list[_Item]) -> bool:
        """Whether newcomers joining the batch's next pass see their first tokens no later than
        a request alone would (its prefill plus two decode steps, by the passes measured so
        far): a pass with the batch's rows in it costs more than a prefill alone, and a
        newcomer has waited for the pass in flight already."""
        fit = self.pass_cost.fit()
        if fit is None:
            return True  # nothing measured yet
        longest = max(len(_spec(i).prompt_ids) for i in newcomers)
        rows, n = len(self._batch), len(newcomers)
        # Their first tokens come once the pass's layers and every row's logits are done.
        joined, step = fit.seconds(rows + n * longest, rows + n), fit.seconds(1, 1)
        now = time.monotonic()
        return all(
            now - i.arrived + joined <= fit.seconds(len(_spec(i).prompt_ids), 1) + 2 * step
            for i in newcomers
        )

    def _take(self) -> list[_Item] | None:
        """Newcomers to admit before the next step ([] for none); None when closing."""
        with self._cond:
            while not self._closing and not self._running and not self._live_waiting():
                self._cond.wait()
            if self._closing:
                return None
            if self._running and not self.continuous:
                return []
            if not self._running:
                self._linger()
            return self._take_waiting(self.max_batch_size)

    def _take_waiting(self, limit: int) -> list[_Item]:
        """Up to `limit` waiting sequences that fit in the batch (call holding the lock)."""
        taken: list[_Item] = []
        room = min(limit, self.max_batch_size - len(self._running))
        while self._waiting and len(taken) < room and not self._closing:
            item = self._waiting.popleft()
            if not item.job.done:  # cancelled or past its deadline: its reader is gone
                taken.append(item)
        for item in taken:
            self._running[id(item)] = item
        return taken

    def _linger(self) -> None:
        # Clients answered by one batch come back a few ms apart: wait batch_wait after the
        # latest arrival, 5 x batch_wait in all at most, so that they are prefilled together.
        now = time.monotonic()
        quiet_at, give_up_at = now + self.batch_wait, now + 5 * self.batch_wait
        while len(self._waiting) < self.max_batch_size and not self._closing:
            left = min(quiet_at, give_up_at) - time.monotonic()
            if left <= 0:
                return
            before = len(self._waiting)
            self._cond.wait(left)
            if len(self._waiting) > before:
                quiet_at = time.monotonic() + self.batch_wait

    def _live_waiting(self) -> bool:
        while self._waiting and self._waiting[0].job.done:
            self._waiting.popleft()
        return bool(self._waiting)

    def _dispatch(
        self, produced: list[Produced], newcomers: list[_Item], drop: bool = True
    ) -> list[int]:
        """Turn the engine's tokens into each job's text events; stop strings end sequences
        (dropped from the batch here, or, with drop False, returned for the caller to drop)."""
        for item in newcomers:
            request = item.job.sequences[item.choice]
            skip_eos = not request.spec.sampling.ignore_eos
            item.text = TextTracker(self.tokenizer, request.stops, request.include_stop, skip_eos)
        stopped = []
        for p in produced:
            item = self._running[p.key]
            assert item.text is not None
            finish = p.finish_reason
            if p.token is not None and item.text.add(p.token) and finish is None:
                finish = "stop"
                stopped.append(p.key)
            tokens = [p.logprob] if p.logprob is not None else []
            text = item.text.take_new_text(final=finish is not None)
            new = int(p.token is not None)
            item.job._put(Event(item.choice, text, new, tokens, p.prompt_logprobs, finish))
            if finish is not None:
                self._leave(p.key)
        if stopped and drop:
            self._batch.drop(stopped)
        return stopped

    def _drop_abandoned(self) -> None:
        gone = [key for key, item in self._running.items() if item.job.done]
        if gone:
            self._batch.drop(gone)
            for key in gone:
                self._leave(key)

    def _leave(self, key: int) -> None:
        with self._cond:
            self._running.pop(key, None)

    def _new_batch(self) -> DecodeBatch:
        # Continuous batches grow a joiner at a time: room for a full batch from the start, so
        # that the cache is never reallocated and copied. A static batch is admitted at once.
        slots = self.max_batch_size if self.continuous else 1
        return DecodeBatch(self.generator.model, self.tokenizer.eos_id, slots)

    def _fail(self, error: JobFailed) -> None:
        with self._cond:
            failed = list(self._running.values())
            self._running.clear()
        for item in failed:
            item.job._put(error)
        self._batch = self._new_batch()
