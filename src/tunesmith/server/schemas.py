"""Request bodies as pydantic models, with OpenAI's defaults and vLLM's extensions.

Unknown fields are kept aside (`unknown_fields()`) and ignored with a warning, as vLLM does:
clients pass model-specific options through, and refusing them breaks those clients. Values
are checked strictly (a string is not a number) except that an integral float counts as an int.
`top_k`, `repetition_penalty`, `min_tokens`, `stop_token_ids`, `ignore_eos` and
`include_stop_str_in_output` are vLLM's extensions (send them with the client's `extra_body`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

MAX_STOPS = 64  # OpenAI allows 4; lm-eval sends its `until` strings plus <|endoftext|>
MAX_STOP_CHARS = 1000
MAX_BIAS = 1000  # logit_bias entries
INT64 = 2**63 - 1


def _integral(value: Any) -> Any:
    # 16.0 from a JSON encoder that writes floats is 16; 16.5 stays a float and is refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]
Prompt = str | list[int]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)

    model: str | None = None
    max_tokens: Int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: Int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0, le=100)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=MAX_BIAS)
    min_tokens: Int = Field(0, ge=0)
    n: Int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[Int] | None = Field(None, max_length=MAX_STOPS)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    seed: Int | None = Field(None, ge=-INT64 - 1, le=INT64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        # Clients that send every field send null for the ones they leave unset.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ValueError("must be a string or a list of strings")
        if len(stops) > MAX_STOPS:
            raise ValueError(f"takes at most {MAX_STOPS} stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence cannot be empty")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence can be at most {MAX_STOP_CHARS} characters")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isascii() or not key.isdigit() or len(key) > 9:
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases must be between -100 and 100, got {bias}")
        return value

    @model_validator(mode="after")
    def _options_need_stream(self):
        # Model-level messages start with the field's name: protocol.py reads it as `param`.
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed with stream")
        return self

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    include_usage: bool = False


class CompletionRequest(_Request):
    """A `POST /v1/completions` body."""

    prompt: str | list[str] | list[int] | list[list[int]] = ""
    echo: bool = False
    logprobs: Int | None = Field(None, ge=0, le=5)
    best_of: Int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        def is_id(t: Any) -> bool:
            return isinstance(t, int) and not isinstance(t, bool)

        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            if all(isinstance(p, str) for p in value) or all(is_id(t) for t in value):
                return value
            if all(isinstance(p, list) and p and all(is_id(t) for t in p) for p in value):
                return value
        raise ValueError(
            "must be a string, a list of strings, or a (non-empty) list of token ids or of "
            "token-id lists"
        )

    @model_validator(mode="after")
    def _neutral(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of: not supported by this server; leave it out")
        if self.suffix:
            raise ValueError("suffix: not supported by this server; leave it out")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens: 0 needs echo (to score the prompt only)")
        return self

    @property
    def prompts(self) -> list[Prompt]:
        """A string, a list of strings, a list of token ids, or a list of token-id lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(t, int) for t in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Request):
    """A `POST /v1/chat/completions` body."""

    messages: list[Message] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: Int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _counts(self):
        if self.max_tokens == 0:
            raise ValueError("max_tokens: must be at least 1")
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("prompt: send either prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    model: str | None = None
    tokens: list[Int] = Field(max_length=1_000_000)


_Request.model_rebuild()
CompletionRequest.model_rebuild()
ChatCompletionRequest.model_rebuild()
