"""Chat completions: messages become one prompt through the model's chat template, and the
reply comes back as an assistant message (or `delta` chunks when streamed).

A tokenizer that ships a chat template (`chat_template` in tokenizer_config.json, or a
chat_template.jinja file) is rendered as `transformers` renders it (sandboxed Jinja, with
add_generation_prompt). GPT-2 models have none, so they get a plain template:

    {system message}                 (when there is one, then a blank line)
    User: {message}
    Assistant: {message}
    ...
    Assistant:

and the reply ends at the next turn marker ("\\nUser:") or at <|endoftext|>.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tunesmith.server import protocol
from tunesmith.server.batcher import Job
from tunesmith.server.completions import FINISH_REASONS, Completion, CompletionService
from tunesmith.server.engine import TokenLogprob
from tunesmith.server.protocol import APIError
from tunesmith.server.schemas import ChatCompletionRequest, Message
from tunesmith.tokenizer import EOS_TOKEN

PLAIN_ROLES = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
}
PLAIN_STOPS = ("\nUser:",)


class ChatTemplate:
    """Messages -> prompt text, with the model's template or the plain one."""

    def __init__(self, source: str | None = None):
        self.source = source  # the Jinja template, or None for the plain one
        self._compiled = None
        if source is not None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise_exception
            self._compiled = env.from_string(source)

    @classmethod
    def from_folder(cls, folder: str | Path | None) -> ChatTemplate:
        """The template shipped with a tokenizer folder, else the plain one."""
        if folder is None:
            return cls()
        folder = Path(folder)
        jinja = folder / "chat_template.jinja"
        if jinja.is_file():
            return cls(jinja.read_text(encoding="utf-8"))
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        template = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(template, list):  # named templates: take the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        return cls(template if isinstance(template, str) else None)

    @property
    def stops(self) -> tuple[str, ...]:
        return () if self._compiled is not None else PLAIN_STOPS

    def render(self, messages: list[Message]) -> str:
        if self._compiled is None:
            return _plain(messages)
        plain = [{"role": m.role, "content": m.text} for m in messages]
        try:
            return self._compiled.render(
                messages=plain,
                add_generation_prompt=True,
                bos_token=EOS_TOKEN,
                eos_token=EOS_TOKEN,
            )
        except APIError:
            raise
        except Exception as e:  # a template error is about these messages
            raise APIError(
                400, f"the chat template cannot render these messages: {e}", "messages"
            ) from None


def _raise_exception(message: str):
    raise APIError(400, f"the chat template refused the messages: {message}", "messages")


def _plain(messages: list[Message]) -> str:
    lines = []
    for m in messages:
        if m.role in ("system", "developer"):
            lines.append(m.text + "\n")
        else:
            lines.append(f"{PLAIN_ROLES[m.role]}: {m.text}")
    return "\n".join(lines) + "\nAssistant:"


def prepare_chat(
    service: CompletionService, req: ChatCompletionRequest, template: ChatTemplate
) -> Completion:
    service.check_model(req.model)
    service._check_counts(1, req.n)
    prompt = template.render(req.messages)
    ids = service.generator.encode_prompt(prompt)
    budget = req.token_budget
    max_tokens = budget if budget is not None else service.context_length - len(ids)
    top = (req.top_logprobs or 0) if req.logprobs else None
    completion = service.build(req, [ids], [prompt], max_tokens, top, None, template.stops)
    completion.id = protocol.completion_id("chatcmpl")
    return completion


async def chat_complete(
    service: CompletionService, completion: Completion, job: Job
) -> dict[str, Any]:
    n = len(completion.sequences)
    texts, finish = [""] * n, [None] * n
    logprobs: list[list[dict]] = [[] for _ in range(n)]
    async for event in service.events(completion, job):
        texts[event.choice] += event.text
        logprobs[event.choice].extend(_logprob_entries(service, event.tokens))
        if event.finish_reason is not None:
            finish[event.choice] = FINISH_REASONS[event.finish_reason]
    wants = completion.request.logprobs
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": texts[i]},
            "logprobs": {"content": logprobs[i]} if wants else None,
            "finish_reason": finish[i],
        }
        for i in range(n)
    ]
    return _envelope(service, completion, choices, completion.usage(), "chat.completion")


async def chat_stream(
    service: CompletionService, completion: Completion, job: Job
) -> AsyncIterator[dict[str, Any]]:
    wants = completion.request.logprobs
    for i in range(len(completion.sequences)):  # the role comes first, as OpenAI sends it
        delta = {"role": "assistant", "content": ""}
        yield _chunk(service, completion, i, delta, None, None)
    async for event in service.events(completion, job):
        reason = FINISH_REASONS.get(event.finish_reason or "")
        entries = _logprob_entries(service, event.tokens) if wants else []
        if event.text or reason or entries:
            delta = {"content": event.text} if event.text else {}
            lp = {"content": entries} if wants else None
            yield _chunk(service, completion, event.choice, delta, reason, lp)
    if completion.request.include_usage:
        yield _envelope(service, completion, [], completion.usage(), "chat.completion.chunk")


def _chunk(service, completion, index, delta, reason, logprobs) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
    return _envelope(service, completion, [choice], None, "chat.completion.chunk")


def _envelope(service, completion, choices, usage, object) -> dict[str, Any]:
    return protocol.envelope(
        completion.id, completion.created, service.model_name, choices, usage, object
    )


def _logprob_entries(service: CompletionService, tokens: list[TokenLogprob]) -> list[dict]:
    """Chat's logprobs.content entries: token, logprob, bytes and the top alternatives."""
    decode = service.tokenizer.decode

    def entry(token: int, logprob: float) -> dict:
        text = decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return [
        {**entry(t.token, t.logprob or 0.0), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
        for t in tokens
    ]
