"""Completions: a validated request becomes one sequence per choice on the batcher, and the
sequences' events become an OpenAI response body or a series of stream chunks.

Choice i of a request (prompt-major: prompt p, sample j is i = p * n + j) is seeded with
seed + i, as `TextGenerator.generate` seeds its samples, so results never depend on batching.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tunesmith.server import protocol
from tunesmith.server.batcher import (
    Batcher,
    ClientGone,
    Event,
    Job,
    JobFailed,
    JobTimeout,
    SequenceRequest,
)
from tunesmith.server.engine import Sampling, SequenceSpec, TokenLogprob
from tunesmith.server.protocol import APIError
from tunesmith.server.schemas import CompletionRequest, Prompt, _Request

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
DEFAULT_MAX_TOKENS = 16  # OpenAI's, for completions


@dataclass
class Completion:
    """One request on its way through the model, with the counts the request log needs."""

    request: Any  # CompletionRequest or ChatCompletionRequest
    prompts: list[list[int]]  # token ids of each prompt
    echoes: list[str]  # the prompt text of each prompt, for `echo`
    sequences: list[SequenceRequest]  # one per choice
    id: str = field(default_factory=protocol.completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    completion_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    def usage(self) -> dict[str, int]:
        return protocol.usage(self.prompt_tokens, self.completion_tokens)


class CompletionService:
    """Turns requests into batched generation, within the served model's limits."""

    def __init__(
        self, generator, batcher: Batcher, model_name: str, timeout: float, max_n=16, max_choices=64
    ):
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.batcher = batcher
        self.model_name = model_name
        self.timeout = timeout
        self.max_n, self.max_choices = max_n, max_choices
        self.on_first_token: Callable[[float], None] | None = None  # seconds since arrival

    @property
    def vocab_size(self) -> int:
        return self.generator.model.config.vocab_size

    @property
    def context_length(self) -> int:
        return self.generator.model.config.n_positions

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                404,
                f"The model `{name}` does not exist; this server serves "
                f"`{self.model_name}` (see GET /v1/models)",
                "model",
                "model_not_found",
            )

    def prepare(self, req: CompletionRequest) -> Completion:
        """Encode the prompts and check them against the model; raises APIError."""
        self.check_model(req.model)
        prompts = req.prompts
        self._check_counts(len(prompts), req.n)
        encoded = [self._encode(p, i if len(prompts) > 1 else None) for i, p in enumerate(prompts)]
        ids = [e[0] for e in encoded]
        logprobs = req.logprobs
        return self.build(
            req,
            ids,
            [e[1] for e in encoded],
            req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS,
            logprobs=logprobs,
            prompt_logprobs=logprobs if req.echo and logprobs is not None else None,
        )

    def _check_counts(self, prompts: int, n: int) -> None:
        if n > self.max_n:
            raise APIError(400, f"n: must be at most {self.max_n}, got {n}", "n")
        if prompts * n > self.max_choices:
            raise APIError(
                400,
                f"{prompts} prompts x n={n} asks for {prompts * n} completions; "
                f"at most {self.max_choices} per request",
                "n",
            )

    def build(
        self,
        req: _Request,
        prompts: list[list[int]],
        echoes: list[str],
        max_tokens: int,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        extra_stops: tuple[str, ...] = (),
    ) -> Completion:
        """One sequence per prompt and sample, each capped by the model's context."""
        sampling = self._sampling(req)
        base_seed = req.seed if req.seed is not None else secrets.randbits(48)
        sequences = []
        for ids in prompts:
            if len(ids) >= self.context_length and max_tokens > 0:
                raise APIError(
                    400,
                    f"the prompt is {len(ids)} tokens long; this model's context is "
                    f"{self.context_length} tokens, which leaves no room for a completion; "
                    f"shorten the prompt",
                    "prompt",
                    "context_length_exceeded",
                )
            budget = min(max_tokens, self.context_length - len(ids))
            for _ in range(req.n):
                spec = SequenceSpec(
                    tuple(ids),
                    budget,
                    sampling,
                    base_seed + len(sequences),
                    logprobs,
                    prompt_logprobs,
                )
                stops = req.stops + extra_stops
                sequences.append(SequenceRequest(spec, stops, req.include_stop_str_in_output))
        return Completion(req, prompts, echoes, sequences)

    def _sampling(self, req: _Request) -> Sampling:
        bias = tuple((int(k), float(v)) for k, v in (req.logit_bias or {}).items())
        stop_ids = frozenset(req.stop_token_ids or ())
        bad = [t for t, _ in bias if t >= self.vocab_size] + [
            t for t in stop_ids if not 0 <= t < self.vocab_size
        ]
        if bad:
            raise APIError(
                400, f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})"
            )
        return Sampling(
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            repetition_penalty=req.repetition_penalty,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            logit_bias=bias,
            min_tokens=req.min_tokens,
            ignore_eos=req.ignore_eos,
            stop_token_ids=stop_ids,
        )

    def _encode(self, prompt: Prompt, index: int | None) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            return self.generator.encode_prompt(prompt), prompt
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            where = "prompt" if index is None else f"prompt[{index}]"
            raise APIError(
                400,
                f"{where}: token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})",
                where,
            )
        return list(prompt), self.tokenizer.decode(prompt)

    def submit(self, completion: Completion) -> Job:
        try:
            return self.batcher.submit(completion.sequences, self.timeout)
        except JobFailed as e:
            raise server_error(e) from None

    async def events(self, completion: Completion, job: Job) -> AsyncIterator[Event]:
        """The job's events, counted as they come; errors become APIErrors."""
        try:
            async for event in job.events():
                if completion.first_token_at is None and event.new_tokens:
                    completion.first_token_at = time.monotonic()
                    if self.on_first_token is not None:
                        self.on_first_token(completion.first_token_at - completion.arrived)
                completion.completion_tokens += event.new_tokens
                yield event
        except JobTimeout:
            raise APIError(
                504,
                f"the request did not finish within {self.timeout:g} s; ask for fewer tokens "
                f"or try again when the server is less busy",
                code="timeout",
                type="server_error",
                headers={"x-should-retry": "false"},  # the openai client obeys this
            ) from None
        except JobFailed as e:
            raise server_error(e) from None
        finally:
            job.cancel()  # a client that leaves frees its rows in the batch

    # The /v1/completions shapes ---------------------------------------------------------

    async def complete(self, completion: Completion, job: Job) -> dict[str, Any]:
        """The whole response body, once every choice has finished."""
        n = len(completion.sequences)
        texts = [self._echo(completion, i) for i in range(n)]
        logprobs = [self._echo_logprobs(completion, i) for i in range(n)]
        finish: list[str | None] = [None] * n
        async for event in self.events(completion, job):
            i = event.choice
            texts[i] += event.text
            if logprobs[i] is not None:
                logprobs[i].add(event)
            if event.finish_reason is not None:
                finish[i] = FINISH_REASONS[event.finish_reason]
        choices = [
            _choice(i, texts[i], finish[i], logprobs[i].body() if logprobs[i] else None)
            for i in range(n)
        ]
        return self._envelope(completion, choices, completion.usage())

    async def stream(self, completion: Completion, job: Job) -> AsyncIterator[dict[str, Any]]:
        """Stream chunks; raises APIError if the job times out or fails mid-stream."""
        n = len(completion.sequences)
        logprobs = [self._echo_logprobs(completion, i) for i in range(n)]
        echoed = [False] * n
        async for event in self.events(completion, job):
            i = event.choice
            text = event.text
            if not echoed[i]:
                echoed[i] = True
                text = self._echo(completion, i) + text
            reason = FINISH_REASONS.get(event.finish_reason or "")
            chunk_lp = None
            if logprobs[i] is not None:
                logprobs[i].add(event)
                chunk_lp = logprobs[i].take()
            if text or reason or chunk_lp:
                yield self._envelope(completion, [_choice(i, text, reason, chunk_lp)], None)
        if completion.request.include_usage:
            yield self._envelope(completion, [], completion.usage())

    def _envelope(self, completion: Completion, choices, usage) -> dict[str, Any]:
        return protocol.envelope(
            completion.id, completion.created, self.model_name, choices, usage, "text_completion"
        )

    def _echo(self, completion: Completion, choice: int) -> str:
        if not completion.request.echo:
            return ""
        return completion.echoes[choice // completion.request.n]

    def _echo_logprobs(self, completion: Completion, choice: int) -> CompletionLogprobs | None:
        if completion.request.logprobs is None:
            return None
        return CompletionLogprobs(self.tokenizer)


def _choice(index: int, text: str, finish_reason: str | None, logprobs=None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


class CompletionLogprobs:
    """OpenAI's completions `logprobs` object: tokens, token_logprobs, top_logprobs and
    text_offset (each token's character offset in the choice's text), built as tokens come."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.offset = 0
        self.fields: dict[str, list] = _empty()
        self._taken = 0

    def add(self, event: Event) -> None:
        for entry in (event.prompt_logprobs or []) + event.tokens:
            self._append(entry)

    def _append(self, entry: TokenLogprob) -> None:
        text = self.tokenizer.decode([entry.token])
        self.fields["tokens"].append(text)
        self.fields["token_logprobs"].append(entry.logprob)
        top = None
        if entry.logprob is not None:
            top = {self.tokenizer.decode([t]): lp for t, lp in entry.top}
            top.setdefault(text, entry.logprob)  # the chosen token is always listed, as vLLM
        self.fields["top_logprobs"].append(top)
        self.fields["text_offset"].append(self.offset)
        self.offset += len(text)

    def body(self) -> dict[str, list]:
        return self.fields

    def take(self) -> dict[str, list] | None:
        """What was added since the last take (for a stream chunk), or None."""
        if len(self.fields["tokens"]) == self._taken:
            return None
        part = {k: v[self._taken :] for k, v in self.fields.items()}
        self._taken = len(self.fields["tokens"])
        return part


def _empty() -> dict[str, list]:
    return {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}


def server_error(error: JobFailed) -> APIError:
    return APIError(503 if error.shutting_down else 500, str(error), type="server_error")


__all__ = ["ClientGone", "Completion", "CompletionService", "server_error"]
