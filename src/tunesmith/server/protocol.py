"""The OpenAI wire format: errors, decoding a request body safely into a pydantic model, and
the response, stream-chunk and log-probability shapes that OpenAI clients (and vLLM) use.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class APIError(Exception):
    """An error answered to the client as an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param=None, code=None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# Request bodies --------------------------------------------------------------------------


def parse_body(raw: bytes, model: type[M]) -> M:
    """Decode JSON and validate it as `model`; raises APIError(400) saying what is wrong.

    Hostile bodies stay 400s: nesting too deep for the parser, numbers too long to convert,
    lone surrogates (which no tokenizer can encode) are all refused here."""
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, or a 5,000-digit number
        if "digits" in str(e):
            raise APIError(400, "a number in the request body has too many digits") from None
        raise APIError(400, f"the request body is not valid JSON: {_short(e)}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    _refuse_lone_surrogates(body)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply") from None


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _short(error: Exception, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."


def _refuse_lone_surrogates(body: Any) -> None:
    stack = [("", body)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
            stack.extend((where or "body", k) for k in value)  # keys are strings too
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(
                    400,
                    f"{where or 'body'}: the text holds a lone surrogate (\\ud800-\\udfff), "
                    f"which is not a character; send valid Unicode",
                    where.split("[")[0].split(".")[0] or None,
                ) from None


def _validation_error(error: ValidationError) -> APIError:
    first = error.errors(include_url=False, include_input=False)[0]
    loc = [str(part) for part in first["loc"]]
    # Union branches add their type names to the location; the field is what the user sent.
    field = loc[0] if loc else None
    path = ".".join(p for p in loc if not _is_type_name(p))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "is required"
    if not path:  # a check across fields names its field first: "max_tokens: ..."
        named, sep, _ = message.partition(": ")
        field = named if sep and named.isidentifier() else None
        return APIError(400, message, field)
    return APIError(400, f"{path}: {message}", field)


def _is_type_name(part: str) -> bool:
    return part in {
        "str",
        "int",
        "list[int]",
        "list[str]",
        "list[list[int]]",
        "function-after",
    } or part.startswith(("list[", "constrained-", "function-"))


# Responses -------------------------------------------------------------------------------


def completion_id(prefix: str = "cmpl") -> str:
    return f"{prefix}-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(name: str, created: int | None = None, max_model_len: int | None = None):
    card = {
        "id": name,
        "object": "model",
        "created": int(created if created is not None else time.time()),
        "owned_by": "tunesmith",
    }
    if max_model_len is not None:
        card["max_model_len"] = max_model_len
    return card


def envelope(
    id: str, created: int, model: str, choices: list[dict], usage: dict | None, object: str
) -> dict[str, Any]:
    """A response body or a stream chunk: the same envelope around the choices."""
    body = {"id": id, "object": object, "created": created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body
