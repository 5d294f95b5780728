"""Parsing and validating completion requests: OpenAI's defaults, and a 400 naming the field
for every malformed body, wrong type, bad range or unsupported value."""

import json

import pytest

from tunesmith.server.protocol import APIError, CompletionRequest, parse_completion_request


def parse(body: dict, **limits) -> CompletionRequest:
    return parse_completion_request(json.dumps(body).encode(), **limits)


def test_defaults_follow_openai():
    req = parse({"model": "m", "prompt": "Hi"})
    assert req == CompletionRequest(prompts=("Hi",), model="m")
    assert (req.max_tokens, req.temperature, req.top_p, req.n) == (16, 1.0, 1.0, 1)
    assert (req.stop, req.seed, req.stream, req.echo) == ((), None, False, False)


def test_nulls_mean_defaults():
    keys = ["max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "echo"]
    assert parse({"prompt": "x", **dict.fromkeys(keys)}) == CompletionRequest(prompts=("x",))


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
            "top_k": 40,
            "repetition_penalty": 1.2,
        }
    )
    assert req.prompts == ("a", "b") and req.num_choices == 6
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k) == (5, 0.0, 0.5, 40)
    assert (req.stop, req.seed, req.stream, req.include_usage, req.echo) == (
        ("\n",),
        -7,
        True,
        True,
        True,
    )
    assert req.repetition_penalty == 1.2


@pytest.mark.parametrize(
    "prompt, expected",
    [
        (None, ("",)),  # no prompt: a new document, from <|endoftext|>
        ("", ("",)),
        (["x", ""], ("x", "")),
        ([464, 3290], ([464, 3290],)),  # token ids
        ([[464], [3290, 1]], ([464], [3290, 1])),
    ],
)
def test_prompt_forms(prompt, expected):
    assert parse({"prompt": prompt}).prompts == expected


def test_harmless_openai_fields_at_their_neutral_value_are_accepted():
    body = {
        "prompt": "x",
        "user": "someone",
        "logit_bias": {},
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logprobs": None,
        "best_of": 2,
        "n": 2,
        "suffix": None,
    }
    assert parse(body).n == 2


def test_integral_floats_count_as_integers():
    assert parse({"prompt": "x", "max_tokens": 16.0}).max_tokens == 16


def bad(body: dict, param: str | None, fragment: str, **limits) -> None:
    with pytest.raises(APIError) as e:
        parse(body, **limits)
    assert e.value.status == 400
    assert e.value.param == param
    assert fragment in e.value.message
    error = e.value.body()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({"prompt": 5}, "prompt", "prompt must be"),
        ({"prompt": []}, "prompt", "prompt must be"),
        ({"prompt": ["a", 1]}, "prompt", "prompt must be"),
        ({"prompt": [[1], []]}, "prompt", "prompt must be"),
        ({"prompt": [True]}, "prompt", "prompt must be"),
        ({"max_tokens": "10"}, "max_tokens", "must be an integer"),
        ({"max_tokens": 1.5}, "max_tokens", "must be an integer"),
        ({"max_tokens": True}, "max_tokens", "must be an integer"),
        ({"max_tokens": 0}, "max_tokens", "at least 1"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"temperature": 2.5}, "temperature", "[0, 2]"),
        ({"temperature": -0.1}, "temperature", "[0, 2]"),
        ({"top_p": 0}, "top_p", "(0, 1]"),
        ({"top_p": 1.01}, "top_p", "(0, 1]"),
        ({"top_k": -1}, "top_k", "at least 0"),
        ({"repetition_penalty": 0}, "repetition_penalty", "(0, inf)"),
        ({"n": 0}, "n", "between 1 and 16"),
        ({"n": 17}, "n", "between 1 and 16"),
        ({"n": "2"}, "n", "must be an integer"),
        ({"stop": 3}, "stop", "string or a list"),
        ({"stop": ["a", 3]}, "stop", "string or a list"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"stop": ""}, "stop", "cannot be empty"),
        ({"seed": "x"}, "seed", "must be an integer"),
        ({"seed": 2**63}, "seed", "between"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"echo": 1}, "echo", "true or false"),
        ({"model": 3}, "model", "must be a string"),
        ({"user": 3}, "user", "must be a string"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed"),
        ({"stream": True, "stream_options": {"x": 1}}, "stream_options", "include_usage"),
        ({"foo": 1}, "foo", "Unrecognized request argument"),
        ({"logprobs": 3}, "logprobs", "not supported"),
        ({"logit_bias": {"50256": -100}}, "logit_bias", "not supported"),
        ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"frequency_penalty": True}, "frequency_penalty", "not supported"),
        ({"best_of": 3}, "best_of", "not supported"),
        ({"suffix": "end"}, "suffix", "not supported"),
    ],
)
def test_bad_fields_are_400_naming_the_field(body, param, fragment):
    bad({"prompt": "x", **body} if "prompt" not in body else body, param, fragment)


def test_too_many_choices_in_one_request():
    bad({"prompt": ["a"] * 10, "n": 7}, "n", "at most 64")
    bad({"prompt": ["a", "b"], "n": 3}, "n", "at most 4", max_n=4, max_choices=4)


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b"nan", b'{"prompt": "x"} trailing'])
def test_malformed_json(raw):
    with pytest.raises(APIError) as e:
        parse_completion_request(raw)
    assert e.value.status == 400 and "not valid JSON" in e.value.message


@pytest.mark.parametrize("raw", [b"[]", b'"prompt"', b"null", b"3"])
def test_body_must_be_an_object(raw):
    with pytest.raises(APIError) as e:
        parse_completion_request(raw)
    assert e.value.status == 400 and "JSON object" in e.value.message
