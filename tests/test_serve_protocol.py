"""Request bodies: OpenAI's defaults, vLLM's extensions, unknown fields set aside, and a 400
naming the field for every malformed body, wrong type or bad range; hostile JSON (deep
nesting, huge numbers, lone surrogates, NaN) is a 400 too."""

import json

import pytest

from tunesmith.server.protocol import APIError, parse_body
from tunesmith.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeRequest,
)


def parse(body: dict, model=CompletionRequest):
    return parse_body(json.dumps(body).encode(), model)


def test_defaults_follow_openai():
    req = parse({"model": "m", "prompt": "Hi"})
    assert req.prompts == ["Hi"] and req.model == "m"
    assert (req.max_tokens, req.temperature, req.top_p, req.n) == (None, 1.0, 1.0, 1)
    assert (req.stops, req.seed, req.stream, req.echo, req.logprobs) == (
        (),
        None,
        False,
        False,
        None,
    )
    assert req.unknown_fields() == []


def test_nulls_mean_defaults():
    keys = ["max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "echo"]
    req = parse({"prompt": "x", **dict.fromkeys(keys)})
    assert req == parse({"prompt": "x"})


def test_all_fields():
    req = parse(
        {
            "model": "m",
            "prompt": ["a", "b"],
            "max_tokens": 5,
            "temperature": 0,
            "top_p": 0.5,
            "n": 3,
            "stop": "\n",
            "seed": -7,
            "stream": True,
            "stream_options": {"include_usage": True},
            "echo": True,
            "logprobs": 2,
            "top_k": 40,
            "repetition_penalty": 1.2,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "logit_bias": {"50256": -100},
            "min_tokens": 3,
            "stop_token_ids": [13],
            "ignore_eos": True,
            "include_stop_str_in_output": True,
        }
    )
    assert req.prompts == ["a", "b"]
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k) == (5, 0.0, 0.5, 40)
    assert (req.stops, req.seed, req.stream, req.include_usage, req.echo) == (
        ("\n",),
        -7,
        True,
        True,
        True,
    )
    assert (req.presence_penalty, req.frequency_penalty, req.logit_bias) == (
        0.5,
        -0.5,
        {"50256": -100},
    )
    assert (req.min_tokens, req.stop_token_ids, req.ignore_eos) == (3, [13], True)


@pytest.mark.parametrize(
    "prompt, expected",
    [
        (None, [""]),  # no prompt: a new document, from <|endoftext|>
        ("", [""]),
        (["x", ""], ["x", ""]),
        ([464, 3290], [[464, 3290]]),  # token ids
        ([[464], [3290, 1]], [[464], [3290, 1]]),
    ],
)
def test_prompt_forms(prompt, expected):
    assert parse({"prompt": prompt}).prompts == expected


def test_unknown_fields_are_kept_aside_not_refused():
    req = parse({"prompt": "x", "frobnicate": 1, "guided_json": {}})
    assert req.unknown_fields() == ["frobnicate", "guided_json"]


def test_integral_floats_count_as_integers_and_many_stops_are_fine():
    assert parse({"prompt": "x", "max_tokens": 16.0}).max_tokens == 16
    assert len(parse({"prompt": "x", "stop": list("abcdefgh")}).stops) == 8


def bad(body: dict, param: str | None, fragment: str, model=CompletionRequest) -> None:
    with pytest.raises(APIError) as e:
        parse(body, model)
    assert e.value.status == 400
    assert e.value.param == param
    assert fragment in e.value.message
    error = e.value.body()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({"prompt": 5}, "prompt", "prompt: must be"),
        ({"prompt": []}, "prompt", "prompt: must be"),
        ({"prompt": ["a", 1]}, "prompt", "prompt: must be"),
        ({"prompt": [[1], []]}, "prompt", "prompt: must be"),
        ({"prompt": [True]}, "prompt", "prompt: must be"),
        ({"max_tokens": "10"}, "max_tokens", "valid integer"),
        ({"max_tokens": 1.5}, "max_tokens", "valid integer"),
        ({"max_tokens": True}, "max_tokens", "valid integer"),
        ({"max_tokens": 0}, "max_tokens", "needs echo"),
        ({"temperature": "hot"}, "temperature", "valid number"),
        ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
        ({"temperature": -0.1}, "temperature", "greater than or equal to 0"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"top_p": 1.01}, "top_p", "less than or equal to 1"),
        ({"top_k": -1}, "top_k", "greater than or equal to 0"),
        ({"repetition_penalty": 0}, "repetition_penalty", "greater than 0"),
        ({"presence_penalty": 3}, "presence_penalty", "less than or equal to 2"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"n": "2"}, "n", "valid integer"),
        ({"stop": 3}, "stop", "string or a list"),
        ({"stop": ["a", 3]}, "stop", "string or a list"),
        ({"stop": ["x"] * 65}, "stop", "at most 64"),
        ({"stop": ""}, "stop", "cannot be empty"),
        ({"seed": "x"}, "seed", "valid integer"),
        ({"seed": 2**63}, "seed", "less than or equal"),
        ({"stream": "yes"}, "stream", "valid boolean"),
        ({"echo": 1}, "echo", "valid boolean"),
        ({"model": 3}, "model", "valid string"),
        ({"user": 3}, "user", "valid string"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed"),
        ({"stream": True, "stream_options": {"x": 1}}, "stream_options", "stream_options.x"),
        ({"logprobs": 6}, "logprobs", "less than or equal to 5"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "between -100 and 100"),
        ({"stop_token_ids": ["a"]}, "stop_token_ids", "valid integer"),
        ({"best_of": 3}, "best_of", "not supported"),
        ({"suffix": "end"}, "suffix", "not supported"),
    ],
)
def test_bad_fields_are_400_naming_the_field(body, param, fragment):
    bad({"prompt": "x", **body} if "prompt" not in body else body, param, fragment)


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({}, "messages", "is required"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages", "messages.0.role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages", "messages.0.content"),
        ({"messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens", "at least 1"),
        ({"messages": [{"role": "user"}], "top_logprobs": 21}, "top_logprobs", "20"),
    ],
)
def test_bad_chat_requests(body, param, fragment):
    bad(body, param, fragment, ChatCompletionRequest)


def test_chat_content_parts_and_token_budget():
    req = parse(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "max_completion_tokens": 7,
        },
        ChatCompletionRequest,
    )
    assert req.messages[0].text == "ab" and req.token_budget == 7
    bad({"prompt": "x", "messages": [{"role": "user"}]}, "prompt", "either", TokenizeRequest)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"nan", "not valid JSON"),
        (b'{"prompt": "x", "temperature": NaN}', "not valid JSON"),
        (b'{"prompt": "x"} trailing', "not valid JSON"),
        (b"[]", "JSON object"),
        (b'"prompt"', "JSON object"),
        (b"null", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"prompt": "x", "seed": ' + b"9" * 5001 + b"}", "too many digits"),
        (b'{"prompt": "\\ud800"}', "lone surrogate"),
        (b'{"prompt": ["ok", "\\udfff x"]}', "lone surrogate"),
        (b'{"\\ud800": 1}', "lone surrogate"),
    ],
)
def test_hostile_or_malformed_json_is_a_400(raw, fragment):
    with pytest.raises(APIError) as e:
        parse_body(raw, CompletionRequest)
    assert e.value.status == 400 and fragment in e.value.message
    assert len(e.value.message) < 300
