"""The API beyond plain completions, through the clients users point at a local server:
log-probabilities (against `transformers`), echo, chat (plain and streamed, with a template),
vLLM's sampling extensions, unknown fields, CORS, /metrics, /tokenize, model ids with a
slash, and a timeout the `openai` client does not retry."""

from __future__ import annotations

import http.client
import json
import shutil
from contextlib import ExitStack
from io import StringIO

import openai
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from tunesmith.generate import TextGenerator
from tunesmith.server import ChatTemplate, CompletionServer, RequestLog, ServerConfig

MODEL = "tiny"
EOS = 50256


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    # float32: exact against `transformers` (auto may pick bfloat16 on this CPU)
    return TextGenerator.load(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()


@pytest.fixture()
def start(generator):
    with ExitStack() as stack:

        def start(name=MODEL, log=None, template=None, **config) -> CompletionServer:
            server = CompletionServer(
                generator, ServerConfig(port=0, **config), name, log, template
            )
            return stack.enter_context(server)

        yield start


@pytest.fixture()
def server(start):
    return start()


def client(server, **kwargs) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=server.url, api_key="-", timeout=30, **kwargs)


def complete(server, **body):
    return client(server).completions.create(model=MODEL, **body)


def raw(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def reference_logprobs(hf_model, ids: list[int]) -> torch.Tensor:
    """(T, vocab): log_softmax of `transformers`' logits at each position."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


# Log-probabilities -------------------------------------------------------------------------


def test_logprobs_with_echo_equal_transformers(server, generator, hf_model):
    prompt = "Why did the chicken cross the road?"
    r = complete(server, prompt=prompt, max_tokens=6, logprobs=3, echo=True, temperature=0)
    (choice,) = r.choices
    lp = choice.logprobs
    prompt_ids = generator.encode_prompt(prompt)
    new_ids = [generator.tokenizer.encode(t)[0] for t in lp.tokens[len(prompt_ids) :]]
    ids = prompt_ids + new_ids
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts it
    ref = reference_logprobs(hf_model, ids)
    for i in range(1, len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(float(ref[i - 1, ids[i]]), abs=1e-4)
        best = torch.topk(ref[i - 1], 3)
        expected = {
            generator.tokenizer.decode([int(t)]): float(v) for v, t in zip(*best, strict=True)
        }
        for token, value in expected.items():
            assert lp.top_logprobs[i][token] == pytest.approx(value, abs=1e-4)
    # Greedy: every generated token is the most likely one.
    for i in range(len(prompt_ids), len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(max(lp.top_logprobs[i].values()))
    assert choice.text == prompt + "".join(lp.tokens[len(prompt_ids) :])
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]


def test_echo_with_max_tokens_0_scores_the_prompt_only(server, generator, hf_model):
    ids = generator.encode_prompt("Knock knock. Who is there?")
    r = complete(server, prompt=[ids, ids[:3]], max_tokens=0, echo=True, logprobs=0)
    assert [c.text for c in r.choices] == [
        generator.tokenizer.decode(ids),
        generator.tokenizer.decode(ids[:3]),
    ]
    assert r.usage.completion_tokens == 0 and r.choices[0].finish_reason == "length"
    ref = reference_logprobs(hf_model, ids)
    got = r.choices[0].logprobs.token_logprobs
    assert got[0] is None
    assert got[1:] == pytest.approx(
        [float(ref[i - 1, ids[i]]) for i in range(1, len(ids))], abs=1e-4
    )


def test_streamed_logprobs_equal_the_whole_answer(server):
    body = dict(prompt="Hello there", max_tokens=8, logprobs=2, echo=True, seed=4)
    whole = complete(server, **body).choices[0].logprobs
    tokens, values = [], []
    for chunk in complete(server, stream=True, **body):
        for c in chunk.choices:
            if c.logprobs is not None:
                tokens += c.logprobs.tokens
                values += c.logprobs.token_logprobs
    assert tokens == whole.tokens and values == pytest.approx(whole.token_logprobs)


# Sampling extensions ------------------------------------------------------------------------


def test_logit_bias_min_tokens_stop_token_ids_and_ignore_eos(server, generator):
    token = generator.tokenizer.encode(" the")[0]
    forced = complete(server, prompt="x", max_tokens=5, logit_bias={str(token): 100})
    assert forced.choices[0].text == " the" * 5
    extra = {"stop_token_ids": [token], "min_tokens": 3}
    r = complete(server, prompt="x", max_tokens=10, logit_bias={str(token): 100}, extra_body=extra)
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "stop"
    assert " the" not in r.choices[0].text[:-4]
    eos = complete(server, prompt="x", max_tokens=6, logit_bias={str(EOS): 100})
    assert (eos.usage.completion_tokens, eos.choices[0].text) == (1, "")
    assert eos.choices[0].finish_reason == "stop"
    ignored = complete(
        server,
        prompt="x",
        max_tokens=3,
        logit_bias={str(EOS): 100},
        extra_body={"ignore_eos": True},
    )
    assert ignored.choices[0].finish_reason == "length" and ignored.usage.completion_tokens == 3


def test_presence_and_frequency_penalties_as_openai_defines_them(server, generator, hf_model):
    prompt_ids = generator.encode_prompt("The the the")
    r = complete(
        server,
        prompt=prompt_ids,
        max_tokens=8,
        temperature=0,
        logprobs=0,
        presence_penalty=0.7,
        frequency_penalty=1.3,
    )
    got = [generator.tokenizer.encode(t)[0] for t in r.choices[0].logprobs.tokens]
    ids, counts = list(prompt_ids), torch.zeros(generator.tokenizer.vocab_size)
    for _ in range(8):  # greedy on logits - presence * [seen] - frequency * count (generated)
        with torch.no_grad():
            logits = hf_model(torch.tensor([ids])).logits[0, -1]
        token = int((logits - 0.7 * (counts > 0) - 1.3 * counts).argmax())
        ids.append(token)
        counts[token] += 1
    assert got == ids[len(prompt_ids) :]
    plain = complete(server, prompt=prompt_ids, max_tokens=8, temperature=0)
    assert plain.choices[0].text != r.choices[0].text


def test_many_stop_strings_and_keeping_the_stop_string(server):
    full = complete(server, prompt="The", max_tokens=20, temperature=0).choices[0].text
    stop = full[8:11]
    stops = ["zzzq", "qqqz", "xxxj", "jjjx", "<|nope|>", stop]  # lm-eval sends 5 + eos
    cut = complete(server, prompt="The", max_tokens=20, temperature=0, stop=stops)
    assert cut.choices[0].text == full[: full.find(stop)]
    kept = complete(
        server,
        prompt="The",
        max_tokens=20,
        temperature=0,
        stop=stops,
        extra_body={"include_stop_str_in_output": True},
    )
    assert kept.choices[0].text == full[: full.find(stop) + len(stop)]


def test_unknown_fields_are_ignored_and_named_in_a_warning(start, tmp_path):
    echo = StringIO()
    server = start(log=RequestLog(tmp_path / "log.jsonl", echo=echo))
    r = complete(server, prompt="x", max_tokens=2, extra_body={"guided_json": {}, "zzz": 1})
    assert r.choices
    server.close()
    (entry,) = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert entry["status"] == 200 and entry["warning"] == "ignored unknown fields: guided_json, zzz"
    assert "ignored unknown fields: guided_json, zzz" in echo.getvalue()


# Chat ----------------------------------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "You tell jokes."},
    {"role": "user", "content": "Tell me one."},
]


def test_chat_uses_the_plain_template_and_ends_at_the_next_turn(server):
    chat = client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, seed=3, n=2
    )
    prompt = "You tell jokes.\n\nUser: Tell me one.\nAssistant:"
    same = complete(server, prompt=prompt, max_tokens=12, seed=3, n=2, stop=["\nUser:"])
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert [c.message.content for c in chat.choices] == [c.text for c in same.choices]
    assert all(c.message.role == "assistant" for c in chat.choices)
    assert chat.usage == same.usage


def test_chat_streams_delta_chunks(server):
    body = dict(model=MODEL, messages=MESSAGES, max_completion_tokens=10, seed=5)
    whole = client(server).chat.completions.create(**body)
    stream = client(server).chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **body
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == (
        whole.choices[0].finish_reason
    )
    assert chunks[-1].usage == whole.usage and {c.object for c in chunks} == {
        "chat.completion.chunk"
    }


def test_chat_logprobs(server):
    r = client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, logprobs=True, top_logprobs=2, temperature=0
    )
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob == t.top_logprobs[0].logprob for t in content)


def test_a_tokenizer_chat_template_is_used(start, tiny_model_dir, tmp_path, generator):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    config = {"chat_template": template}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    server = start(template=ChatTemplate.from_folder(folder))
    status, _, body = raw(server, "POST", "/tokenize", {"messages": MESSAGES})
    rendered = "<system>You tell jokes.<user>Tell me one.<assistant>"
    assert status == 200 and json.loads(body)["tokens"] == generator.tokenizer.encode(rendered)
    assert ChatTemplate.from_folder(tiny_model_dir).render([]) == "\nAssistant:"  # plain


# The rest of the API -----------------------------------------------------------------------


def test_tokenize_detokenize_version_and_a_model_id_with_a_slash(start, generator):
    server = start(name="runs/3")
    status, _, body = raw(server, "POST", "/tokenize", {"prompt": "Hello there"})
    answer = json.loads(body)
    assert status == 200 and answer["tokens"] == generator.tokenizer.encode("Hello there")
    assert answer["count"] == 2 and answer["max_model_len"] == generator.context_length
    status, _, body = raw(server, "POST", "/detokenize", {"tokens": answer["tokens"]})
    assert json.loads(body) == {"prompt": "Hello there"}
    assert json.loads(raw(server, "GET", "/version")[2])["version"]
    assert client(server).models.retrieve("runs/3").id == "runs/3"  # sent as runs%2F3


def test_cors_preflight_and_headers_with_allow_origin(start):
    server = start(allow_origin=("http://localhost:3000",))
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    status, headers, _ = raw(server, "OPTIONS", "/v1/completions", headers=preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    status, headers, _ = raw(
        server, "GET", "/v1/models", headers={"Origin": "http://localhost:3000"}
    )
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    status, headers, _ = raw(server, "GET", "/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in headers


def test_options_and_head_without_cors(server):
    status, headers, body = raw(server, "OPTIONS", "/v1/completions")
    assert status == 204 and headers["allow"] == "OPTIONS, POST" and body == b""
    assert "access-control-allow-origin" not in headers
    status, headers, body = raw(server, "HEAD", "/v1/models")
    assert status == 200 and body == b"" and headers["content-type"] == "application/json"


def test_metrics_in_prometheus_format(server):
    complete(server, prompt="Hello", max_tokens=3)
    complete(server, prompt="Hello", max_tokens=3, stream=True).close()
    raw(server, "POST", "/v1/completions", {"prompt": "x", "n": 0})
    status, headers, body = raw(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {
        (s.labels["path"], s.labels["status"]): s.value
        for s in families["tunesmith_requests"].samples
        if s.name == "tunesmith_requests_total"
    }
    assert requests[("/v1/completions", "200")] >= 1 and requests[("/v1/completions", "400")] == 1
    assert next(iter(families["tunesmith_completion_tokens"].samples)).value >= 3
    ttft = families["tunesmith_time_to_first_token_seconds"].samples
    assert [s.value for s in ttft if s.name.endswith("_count")][0] >= 1
    for gauge in ("tunesmith_queue_depth", "tunesmith_batch_size"):
        assert families[gauge].samples[0].value == 0


def test_a_timeout_is_not_retried_by_the_openai_client(start, tmp_path):
    server = start(timeout=0.001, log=RequestLog(tmp_path / "log.jsonl"))
    retrying = client(server, max_retries=2)  # the client's default
    with pytest.raises(openai.APIStatusError) as e:
        retrying.completions.create(model=MODEL, prompt="x", max_tokens=100)
    assert e.value.status_code == 504
    assert e.value.response.headers["x-should-retry"] == "false"
    server.close()
    entries = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(entries) == 1  # asked once, not three times
