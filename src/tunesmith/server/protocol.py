"""The OpenAI completions protocol: parse and validate a request body into a typed object,
and build the error, response and stream-chunk shapes that OpenAI clients expect.

Fields OpenAI defines but this server does not implement (`logprobs`, `logit_bias`,
penalties, `best_of`, `suffix`) are accepted only at their neutral value and refused
otherwise; fields OpenAI does not define are refused, as OpenAI does. `top_k` and
`repetition_penalty` are extensions (send them with the client's `extra_body`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

Prompt = str | list[int]  # text, or token ids as OpenAI also accepts

MAX_STOPS = 4  # as OpenAI
INT64 = (-(2**63), 2**63 - 1)


class APIError(Exception):
    """An error answered to the client as an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type,
        )

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param=None, code=None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True)
class CompletionRequest:
    """A validated `POST /v1/completions` body, with OpenAI's defaults filled in."""

    prompts: tuple[Prompt, ...]
    model: str | None = None
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    echo: bool = False

    @property
    def num_choices(self) -> int:
        return len(self.prompts) * self.n


# Accepted only when absent, null, or equal to the neutral value listed here.
_NEUTRAL = {
    "logprobs": (None,),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "suffix": (None, ""),
}
_KNOWN = {
    "prompt",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "echo",
    "user",
    "best_of",
    *_NEUTRAL,
}


def parse_completion_request(
    raw: bytes, max_n: int = 16, max_choices: int = 64
) -> CompletionRequest:
    """Decode and validate a request body; raises APIError(400) naming the bad field."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    for key in body:
        if key not in _KNOWN:
            raise APIError(400, f"Unrecognized request argument supplied: {key}", key)
    for key, allowed in _NEUTRAL.items():
        if key in body and not any(_same(body[key], a) for a in allowed):
            raise APIError(
                400, f"{key} is not supported by this server; leave it out", key, "unsupported"
            )
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise APIError(400, "user must be a string", "user")

    n = _int(body, "n", 1, low=1, high=max_n)
    if body.get("best_of") is not None and not _same(body["best_of"], n):
        raise APIError(400, "best_of is not supported by this server; leave it out", "best_of")
    prompts = _prompts(body.get("prompt"))
    if len(prompts) * n > max_choices:
        raise APIError(
            400,
            f"{len(prompts)} prompts x n={n} asks for {len(prompts) * n} completions; "
            f"at most {max_choices} per request",
            "n",
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "model must be a string", "model")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise APIError(400, "stream_options must be {'include_usage': bool}", "stream_options")
        if not stream:
            raise APIError(400, "stream_options is only allowed with stream", "stream_options")
        include_usage = _bool(options, "include_usage", False, "stream_options.include_usage")
    return CompletionRequest(
        prompts=prompts,
        model=model,
        max_tokens=_int(body, "max_tokens", 16, low=1),
        temperature=_number(body, "temperature", 1.0, low=0, high=2),
        top_p=_number(body, "top_p", 1.0, low=0, high=1, open_low=True),
        top_k=_int(body, "top_k", 0, low=0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, low=0, open_low=True),
        n=n,
        stop=_stops(body.get("stop")),
        seed=_int(body, "seed", None, low=INT64[0], high=INT64[1]),
        stream=stream,
        include_usage=include_usage,
        echo=_bool(body, "echo", False),
    )


def _same(value: Any, neutral: Any) -> bool:
    if neutral is None:
        return value is None
    if isinstance(value, bool):
        return False
    if isinstance(neutral, int):  # 0 and 0.0 are the same penalty
        return isinstance(value, int | float) and value == neutral
    return type(value) is type(neutral) and value == neutral


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(body, key, default, low=None, high=None):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 16.0 from a JSON encoder that writes floats
    if not _is_int(value):
        raise APIError(400, f"{key} must be an integer, got {json.dumps(value)}", key)
    if (low is not None and value < low) or (high is not None and value > high):
        raise APIError(400, f"{key} must be {_range(low, high)}, got {value}", key)
    return value


def _number(body, key, default, low, high=None, open_low=False):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise APIError(400, f"{key} must be a number, got {json.dumps(value)}", key)
    too_low = value <= low if open_low else value < low
    if too_low or (high is not None and value > high):
        lo = f"({low}" if open_low else f"[{low}"
        hi = f"{high}]" if high is not None else "inf)"
        raise APIError(400, f"{key} must be in {lo}, {hi}, got {value}", key)
    return float(value)


def _bool(body, key, default, param=None):
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"{param or key} must be true or false", param or key)
    return value


def _range(low, high) -> str:
    if high is None:
        return f"at least {low}"
    return f"between {low} and {high}"


def _prompts(value: Any) -> tuple[Prompt, ...]:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    bad = APIError(
        400, "prompt must be a string, a list of strings, or a list of token ids", "prompt"
    )
    if value is None:
        return ("",)  # no prompt: start a new document, as OpenAI does
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not value:
        raise bad
    if all(isinstance(p, str) for p in value):
        return tuple(value)
    if all(_is_int(t) for t in value):
        return (list(value),)
    if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in value):
        return tuple(list(p) for p in value)
    raise bad


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError(400, "stop must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop takes at most {MAX_STOPS} sequences", "stop")
    if any(not s for s in stops):
        raise APIError(400, "a stop sequence cannot be empty", "stop")
    return tuple(stops)


# Responses -------------------------------------------------------------------------------


def completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def completion(
    id: str, created: int, model: str, choices: list[dict], usage: dict | None
) -> dict[str, Any]:
    """The response body, and (with one choice and no usage) a stream chunk: same shape."""
    body = {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(name: str, created: int | None = None) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": int(created if created is not None else time.time()),
        "owned_by": "tunesmith",
    }
