"""Completions: a validated request becomes one sequence per choice on the batcher, and the
sequences' text becomes an OpenAI response body or a series of stream chunks.

Choice i of a request (prompt-major: prompt p, sample j is i = p * n + j) is seeded with
seed + i, as `TextGenerator.generate` seeds its samples, so results never depend on batching.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tunesmith.generate import GenerationConfig, Request, Sample, TextGenerator
from tunesmith.server import protocol
from tunesmith.server.batcher import Batcher, Job, JobFailed, JobTimeout
from tunesmith.server.protocol import APIError, CompletionRequest

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class Completion:
    """One request on its way through the model, with the counts the request log needs."""

    request: CompletionRequest
    echoes: list[str]  # the prompt text of each prompt, for `echo`
    sequences: list[Request]  # one per choice
    prompt_tokens: int
    id: str = field(default_factory=protocol.completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0

    def usage(self) -> dict[str, int]:
        return protocol.usage(self.prompt_tokens, self.completion_tokens)


class CompletionService:
    """Turns completion requests into batched generation, within the served model's limits."""

    def __init__(self, generator: TextGenerator, batcher: Batcher, model_name: str, timeout: float):
        self.generator = generator
        self.batcher = batcher
        self.model_name = model_name
        self.timeout = timeout

    def prepare(self, req: CompletionRequest) -> Completion:
        """Encode the prompts and check them against the model; raises APIError."""
        if req.model is not None and req.model != self.model_name:
            raise APIError(
                404,
                f"The model `{req.model}` does not exist; this server serves "
                f"`{self.model_name}` (see GET /v1/models)",
                "model",
                "model_not_found",
            )
        base_seed = req.seed if req.seed is not None else secrets.randbits(48)
        context = self.generator.context_length
        echoes, sequences, prompt_tokens = [], [], 0
        for p, prompt in enumerate(req.prompts):
            ids, echo = self._encode(prompt, p if len(req.prompts) > 1 else None)
            if len(ids) >= context:
                raise APIError(
                    400,
                    f"the prompt is {len(ids)} tokens long; this model's context is {context} "
                    f"tokens, which leaves no room for a completion; shorten the prompt",
                    "prompt",
                    "context_length_exceeded",
                )
            config = GenerationConfig(
                length=min(req.max_tokens, context - len(ids)),  # capped by the context
                temperature=req.temperature,
                top_k=req.top_k,
                top_p=req.top_p,
                repetition_penalty=req.repetition_penalty,
                stop=req.stop,
            )
            echoes.append(echo)
            prompt_tokens += len(ids)
            for _ in range(req.n):
                sequences.append(Request(ids, config, base_seed + len(sequences)))
        return Completion(req, echoes, sequences, prompt_tokens)

    def _encode(self, prompt: protocol.Prompt, index: int | None) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            return self.generator.encode_prompt(prompt), prompt
        vocab = self.generator.model.config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            where = "prompt" if index is None else f"prompt[{index}]"
            raise APIError(
                400, f"{where}: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", where
            )
        return list(prompt), self.generator.tokenizer.decode(prompt)

    def submit(self, completion: Completion) -> Job:
        try:
            return self.batcher.submit(completion.sequences, self.timeout)
        except JobFailed as e:
            raise _server_error(e) from None

    def complete(
        self, completion: Completion, still_wanted: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """The whole response body, once every choice has finished. still_wanted() says
        whether the client is still there to receive it."""
        job = self.submit(completion)
        texts = [""] * len(completion.sequences)
        finish: list[str | None] = [None] * len(completion.sequences)
        try:
            for i, text, sample in self._events(job, still_wanted):
                texts[i] += text
                if sample is not None:
                    finish[i] = self._finished(completion, sample)
        finally:
            job.cancel()
        choices = [
            protocol.choice(i, self._echo(completion, i) + texts[i], finish[i])
            for i in range(len(texts))
        ]
        return protocol.completion(
            completion.id, completion.created, self.model_name, choices, completion.usage()
        )

    def stream(self, completion: Completion, job: Job) -> Iterator[dict[str, Any]]:
        """Stream chunks; raises APIError if the job times out or fails mid-stream."""
        try:
            if completion.request.echo:
                for i in range(len(completion.sequences)):
                    yield self._chunk(completion, i, self._echo(completion, i), None)
            for i, text, sample in self._events(job):
                reason = None if sample is None else self._finished(completion, sample)
                if text or reason:
                    yield self._chunk(completion, i, text, reason)
            if completion.request.include_usage:
                yield protocol.completion(
                    completion.id,
                    completion.created,
                    self.model_name,
                    [],
                    completion.usage(),
                )
        finally:
            job.cancel()  # a client that leaves mid-stream frees its rows in the batch

    def _events(self, job: Job, still_wanted=None) -> Iterator[tuple[int, str, Sample | None]]:
        try:
            yield from job.events(still_wanted)
        except JobTimeout:
            raise APIError(
                504,
                f"the request did not finish within {self.timeout:g} s; ask for fewer tokens "
                f"or try again when the server is less busy",
                code="timeout",
                type="server_error",
            ) from None
        except JobFailed as e:
            raise _server_error(e) from None

    def _finished(self, completion: Completion, sample: Sample) -> str:
        # The eos token counts: the model produced it, it took a decoding step.
        completion.completion_tokens += len(sample.token_ids) + (sample.finish_reason == "eos")
        return FINISH_REASONS[sample.finish_reason]

    def _echo(self, completion: Completion, choice: int) -> str:
        if not completion.request.echo:
            return ""
        return completion.echoes[choice // completion.request.n]

    def _chunk(self, completion: Completion, i: int, text: str, reason: str | None) -> dict:
        return protocol.completion(
            completion.id,
            completion.created,
            self.model_name,
            [protocol.choice(i, text, reason)],
            None,
        )


def _server_error(error: JobFailed) -> APIError:
    return APIError(503 if error.shutting_down else 500, str(error), type="server_error")
