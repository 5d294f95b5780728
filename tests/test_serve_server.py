"""A live server on loopback with the tiny model: the `openai` client (plain and streaming),
OpenAI's semantics (seeds, n, prompt lists, echo, stop, usage), every bad request, the API
key, limits and timeouts, and many clients at once."""

from __future__ import annotations

import _thread
import http.client
import importlib
import json
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import openai
import pytest

import tunesmith
from tunesmith.generate import TextGenerator
from tunesmith.server import CompletionServer, RequestLog, ServerConfig

MODEL = "tiny"


class GatedModel:
    """The model behind a gate: every forward call waits there (prefill and decode steps)."""

    def __init__(self, model, owner: GatedGenerator):
        self.model, self.owner = model, owner

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        owner = self.owner
        owner.entered.set()
        assert owner.gate.wait(30), "a test left the model gate closed"
        if owner.fail_next:
            owner.fail_next = False
            raise RuntimeError("the device fell over")
        return self.model(*args, **kwargs)


class GatedGenerator(TextGenerator):
    """The tiny model with a gate the model worker stops at before each forward call, so
    tests decide when the model is busy, and a switch that makes the next call fail."""

    def __init__(self, base: TextGenerator):
        super().__init__(base.model, base.tokenizer, base.source)
        self.model = GatedModel(base.model, self)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False

    def hold(self) -> None:
        """Stop the model at the gate from the next forward call on (until gate.set())."""
        self.entered.clear()
        self.gate.clear()


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return TextGenerator.load(str(tiny_model_dir), device="cpu")


@pytest.fixture()
def start(generator):
    """start(**config) -> a running server on a free loopback port, closed after the test."""
    with ExitStack() as stack:

        def start(log=None, **config) -> CompletionServer:
            gated = GatedGenerator(generator)
            server = CompletionServer(gated, ServerConfig(port=0, **config), MODEL, log)
            stack.enter_context(server)
            stack.callback(gated.gate.set)  # runs first: a closed gate never blocks teardown
            return server

        yield start


@pytest.fixture()
def server(start):
    return start()


def client(server: CompletionServer, key: str = "unused", **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=30, **kwargs)


def complete(server, **body):
    return client(server).completions.create(model=MODEL, **body)


def raw(server, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    """One HTTP request; body: bytes, or anything else to send as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else {}


# The openai client -------------------------------------------------------------------------


def test_openai_client_completion(server):
    r = complete(server, prompt="Why did the chicken", max_tokens=7, seed=1)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == MODEL
    (choice,) = r.choices
    assert choice.index == 0 and choice.text and choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 7


def test_openai_client_streaming_gives_the_same_text(server):
    body = dict(prompt=["Knock knock", ""], n=2, max_tokens=12, seed=5, temperature=0.8)
    plain = complete(server, **body)
    stream = complete(server, stream=True, stream_options={"include_usage": True}, **body)
    texts, finish, ids, usage = ["", "", "", ""], [None] * 4, set(), None
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for c in chunk.choices:
            assert finish[c.index] is None, "text after the choice finished"
            texts[c.index] += c.text
            finish[c.index] = c.finish_reason
    assert len(ids) == 1
    assert texts == [c.text for c in plain.choices]
    assert finish == [c.finish_reason for c in plain.choices]
    assert usage == plain.usage


def test_models_and_health(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].owned_by == "tunesmith"
    assert client(server).models.retrieve(MODEL).id == MODEL
    assert raw(server, "GET", "/health") == (200, {"status": "ok"})
    status, body = raw(server, "GET", "/v1/models/other")
    assert status == 404 and body["error"]["code"] == "model_not_found"


# Semantics ---------------------------------------------------------------------------------


def texts(r) -> list[str]:
    return [c.text for c in r.choices]


def test_choice_i_uses_seed_plus_i_prompt_major(server):
    many = complete(server, prompt=["a", "b"], n=2, max_tokens=6, seed=10)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    one_by_one = [
        complete(server, prompt=p, max_tokens=6, seed=10 + i).choices[0].text
        for i, p in enumerate(["a", "a", "b", "b"])
    ]
    assert texts(many) == one_by_one
    assert len(set(one_by_one)) == 4
    assert many.usage.prompt_tokens == 2  # each prompt once, whatever n


def test_same_seed_same_text_no_seed_random(server):
    a = complete(server, prompt="x", max_tokens=10, seed=3)
    b = complete(server, prompt="x", max_tokens=10, seed=3)
    assert texts(a) == texts(b)
    c = complete(server, prompt="x", max_tokens=10, n=2)
    d = complete(server, prompt="x", max_tokens=10, n=2)
    assert len(set(texts(c) + texts(d))) == 4


def test_echo_prepends_the_prompt(server):
    plain = complete(server, prompt=["Hello", "Bye"], max_tokens=5, seed=2)
    echoed = complete(server, prompt=["Hello", "Bye"], max_tokens=5, seed=2, echo=True)
    assert texts(echoed) == ["Hello" + plain.choices[0].text, "Bye" + plain.choices[1].text]
    chunks = complete(server, prompt="Hello", max_tokens=5, seed=2, echo=True, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == "Hello" + plain.choices[0].text


def test_stop_string_cuts_the_text(server):
    full = complete(server, prompt="The", max_tokens=20, temperature=0).choices[0]
    stop = full.text[8:11]
    assert stop and full.text.find(stop) >= 1
    cut = complete(server, prompt="The", max_tokens=20, temperature=0, stop=[stop, "zzzz"])
    assert cut.choices[0].text == full.text[: full.text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_token_id_prompts_and_empty_prompt(server, generator):
    ids = generator.encode_prompt("Knock knock")
    by_text = complete(server, prompt="Knock knock", max_tokens=5, seed=1)
    by_ids = complete(server, prompt=ids, max_tokens=5, seed=1)
    assert texts(by_ids) == texts(by_text)
    unconditional = complete(server, prompt="", max_tokens=5, seed=1)
    assert unconditional.usage.prompt_tokens == 1  # <|endoftext|>
    assert texts(complete(server, prompt=[[50256]], max_tokens=5, seed=1)) == texts(unconditional)


def test_max_tokens_is_capped_by_the_context(server, generator):
    prompt = [464] * (generator.context_length - 10)
    r = complete(server, prompt=prompt, max_tokens=1000, temperature=0)
    assert r.usage.completion_tokens <= 10
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 10


# Bad requests ------------------------------------------------------------------------------

BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": MODEL, "prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": MODEL, "prompt": "x", "temperature": 3}, 400, "temperature"),
    ({"model": MODEL, "prompt": "x", "logprobs": 6}, 400, "logprobs"),
    ({"model": MODEL, "prompt": "x", "logit_bias": {"99999999": 1}}, 400, None),
    ({"model": MODEL, "prompt": [464] * 128}, 400, "prompt"),
    ({"model": MODEL, "prompt": [[464], [99999999]]}, 400, "prompt[1]"),
    ({"model": "gpt-4", "prompt": "x"}, 404, "model"),
]


@pytest.mark.parametrize("body, status, param", BAD)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, body, status, param):
    got, answer = raw(server, "POST", "/v1/completions", body)
    assert got == status
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    assert complete(server, prompt="still there?", max_tokens=2).choices


def test_prompt_longer_than_the_context(server):
    with pytest.raises(openai.BadRequestError) as e:
        complete(server, prompt="ha " * 200, max_tokens=1)
    assert e.value.code == "context_length_exceeded"
    assert "shorten the prompt" in e.value.message


def test_openai_client_raises_on_bad_values(server):
    with pytest.raises(openai.BadRequestError, match="top_p"):
        complete(server, prompt="x", top_p=0)
    with pytest.raises(openai.BadRequestError, match="at most 64"):
        complete(server, prompt="x", stop=["x"] * 65)
    with pytest.raises(openai.NotFoundError):
        client(server).completions.create(model="davinci-002", prompt="x")


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/v1/completions", 405),
        ("POST", "/health", 405),
        ("GET", "/v1/chat", 404),
        ("DELETE", "/v1/models", 405),
        ("GET", "/%1b[31mred", 404),
    ],
)
def test_wrong_routes_and_methods_answer_json_never_html(server, method, path, status):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(method, path, body=b"{}" if method == "POST" else None)
    response = conn.getresponse()
    assert response.status == status
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(response.read())["error"]["message"]


def test_body_size_limit(start):
    server = start(max_body_bytes=1000)
    with pytest.raises(openai.APIStatusError) as e:
        complete(server, prompt="x" * 2000)
    assert e.value.status_code == 413
    # Announced but never sent: refused from the header alone.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n")
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer
    # Chunked, so no Content-Length to judge by: refused once past the limit.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(
        "POST",
        "/v1/completions",
        body=iter([b'{"prompt": "' + b"x" * 2000 + b'"}']),
        encode_chunked=True,
        headers={"Transfer-Encoding": "chunked"},
    )
    assert conn.getresponse().status == 413
    assert complete(server, prompt="x", max_tokens=1).choices


# The API key -------------------------------------------------------------------------------


def test_api_key_is_required_on_every_request(start):
    server = start(api_key="s3cret")
    r = client(server, "s3cret").completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert r.choices
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, "wrong").completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert e.value.code == "invalid_api_key"
    for path in ("/health", "/v1/models"):
        assert raw(server, "GET", path)[0] == 401
        assert raw(server, "GET", path, headers={"Authorization": "Bearer s3cret"})[0] == 200
    status, _ = raw(server, "POST", "/v1/completions", {"prompt": "x"}, {"Authorization": "s3cret"})
    assert status == 401


# The model worker: batching, concurrency, timeouts, failures ---------------------------------


def test_health_and_models_do_not_wait_for_the_model(server):
    gen = server.batcher.generator
    gen.hold()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(complete, server, prompt="x", max_tokens=3)
        assert gen.entered.wait(30)
        assert raw(server, "GET", "/health")[0] == 200  # answered while the model is held
        assert raw(server, "GET", "/v1/models")[0] == 200
        assert not busy.done()
        gen.gate.set()
        assert busy.result().choices


# Prompts of different lengths, so batches are left-padded; mixed settings in one batch.
CONCURRENT = [
    dict(
        prompt=["Why", "A man walks into a bar", ""][i % 3],
        max_tokens=16 + i % 5,
        seed=100 + i,
        temperature=[1.0, 0.7, 0.0][i % 3],
        top_p=[1.0, 0.9][i % 2],
        n=1 + i % 2,
        stop=["\n"] if i % 4 == 0 else None,
    )
    for i in range(12)
]


def run_request(server, body, stream):
    if not stream:
        return texts(complete(server, **body))
    out = [""] * body["n"]
    for chunk in complete(server, stream=True, **body):
        for c in chunk.choices:
            out[c.index] += c.text
    return out


def test_concurrent_clients_are_batched_and_get_what_they_get_one_at_a_time(server):
    one_at_a_time = [run_request(server, body, stream=False) for body in CONCURRENT]
    gen, batcher = server.batcher.generator, server.batcher
    sequences = sum(b["n"] for b in CONCURRENT)  # 18: more than one batch of 16
    gen.hold()  # hold the model, so that all the clients are waiting together
    with ThreadPoolExecutor(len(CONCURRENT) + 1) as pool:
        blocker = pool.submit(complete, server, prompt="hold", max_tokens=2)
        assert gen.entered.wait(30)
        results = [
            pool.submit(run_request, server, body, stream=i % 2 == 1)
            for i, body in enumerate(CONCURRENT)
        ]
        for _ in range(300):
            if batcher.waiting == sequences:
                break
            threading.Event().wait(0.05)
        assert batcher.waiting == sequences
        assert raw(server, "GET", "/health")[0] == 200
        gen.gate.set()
        assert [f.result() for f in results] == one_at_a_time
        assert blocker.result().choices
    assert batcher.largest_batch == server.config.max_batch_size


def test_timeout_answers_504_and_the_server_keeps_serving(start):
    server = start(timeout=0.3)
    gen = server.batcher.generator
    gen.hold()
    with pytest.raises(openai.APIStatusError) as e:
        complete(server, prompt="x", max_tokens=3)
    assert e.value.status_code == 504 and e.value.code == "timeout"
    with pytest.raises(openai.APIError, match="did not finish"):
        for _ in complete(server, prompt="x", max_tokens=3, stream=True):
            pass
    gen.gate.set()
    assert complete(server, prompt="x", max_tokens=3).choices


def test_a_failed_batch_answers_500_and_the_server_keeps_serving(server):
    server.batcher.generator.fail_next = True
    with pytest.raises(openai.InternalServerError, match="the device fell over"):
        complete(server, prompt="x", max_tokens=3)
    assert complete(server, prompt="x", max_tokens=3).choices


def test_a_client_leaving_mid_stream_is_logged_and_the_server_keeps_serving(start, tmp_path):
    server = start(log=RequestLog(tmp_path / "requests.jsonl"))
    stream = complete(server, prompt="x", max_tokens=100, stream=True, seed=1)
    next(iter(stream))
    stream.close()
    assert complete(server, prompt="x", max_tokens=3).choices
    server.close()
    entries = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert len(entries) == 2 and entries[1]["status"] == 200
    # The tokens it was sent are counted, though it left before the end.
    assert entries[0]["stream"] and 0 < entries[0]["completion_tokens"] < 100
    assert entries[0]["status"] == 499


def test_a_client_that_gives_up_waiting_is_dropped_from_the_queue(start, tmp_path):
    server = start(log=RequestLog(tmp_path / "requests.jsonl"))
    gen, batcher = server.batcher.generator, server.batcher
    gen.hold()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(complete, server, prompt="hold", max_tokens=2)
        assert gen.entered.wait(30)
        impatient = openai.OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            impatient.completions.create(model=MODEL, prompt="x", max_tokens=50, n=3)
        for _ in range(200):  # the server looks every half second
            if batcher.waiting == 0:
                break
            threading.Event().wait(0.05)
        assert batcher.waiting == 0  # dropped while the model was still busy
        gen.gate.set()
        assert busy.result().choices
    server.close()
    log = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert sorted(e["status"] for e in log) == [200, 499]


def test_an_internal_error_is_500_and_the_server_keeps_serving(server, monkeypatch, capsys):
    def broken(request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.service, "prepare", broken)
    status, body = raw(server, "POST", "/v1/completions", {"prompt": "x"})
    assert status == 500 and "a bug" in body["error"]["message"]
    assert body["error"]["type"] == "server_error"
    monkeypatch.undo()
    assert complete(server, prompt="x", max_tokens=2).choices
    assert "RuntimeError: a bug" in capsys.readouterr().err  # the traceback, for whoever runs it


def test_closing_fails_waiting_requests_with_503(start):
    server = start()
    gen = server.batcher.generator
    gen.hold()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(raw, server, "POST", "/v1/completions", {"prompt": "x"})
        assert gen.entered.wait(30)
        closer = threading.Thread(target=server.close)
        closer.start()
        status, body = waiting.result()
        gen.gate.set()
        closer.join()
    assert status == 503 and "shutting down" in body["error"]["message"]


def test_request_log_lines(start, tmp_path):
    log = RequestLog(tmp_path / "requests.jsonl")
    server = start(log=log)
    complete(server, prompt="Hello there", max_tokens=4, n=2, seed=1)
    raw(server, "POST", "/v1/completions", {"prompt": "x", "n": 0})
    raw(server, "GET", "/health")  # liveness probes stay out of the log
    server.close()
    ok, bad = (json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines())
    assert ok["path"] == "/v1/completions" and ok["status"] == 200 and ok["choices"] == 2
    assert ok["prompt_tokens"] == 2 and ok["completion_tokens"] >= 2
    assert ok["latency_s"] >= 0 and ok["time"] > 0 and ok["stream"] is False
    assert bad["status"] == 400 and bad["error"].startswith("n: ")
    assert log.totals() == {
        "requests": 2,
        "errors": 1,
        "prompt_tokens": 2,
        "completion_tokens": ok["completion_tokens"],
    }


def test_the_serve_function_serves_until_stopped(generator):
    answers = []

    def use_then_stop(server: CompletionServer) -> None:
        answers.append(complete(server, prompt="x", max_tokens=2).choices[0].text)
        server.stop()

    def on_ready(server: CompletionServer) -> None:
        threading.Thread(target=use_then_stop, args=(server,)).start()

    importlib.import_module("tunesmith.server.server")  # importing the package keeps the name
    totals = tunesmith.serve(generator, ServerConfig(port=0), MODEL, on_ready=on_ready)
    assert len(answers) == 1
    assert totals["requests"] == 1 and totals["completion_tokens"] >= 1


def test_ctrl_c_answers_the_requests_in_flight_with_503(generator):
    gated = GatedGenerator(generator)
    answers = []

    def wait_then_interrupt(server: CompletionServer) -> None:
        gated.hold()
        try:
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(raw, server, "POST", "/v1/completions", {"prompt": "x"})
                assert gated.entered.wait(30)
                _thread.interrupt_main()  # what a Ctrl-C does
                answers.append(waiting.result())
        finally:
            gated.gate.set()
            if not answers:
                server.stop()  # the test fails below instead of serving forever

    def on_ready(server: CompletionServer) -> None:
        threading.Thread(target=wait_then_interrupt, args=(server,)).start()

    # Ctrl-C as Python handles it, whatever SIGINT handler earlier tests in this process left.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        totals = tunesmith.serve(gated, ServerConfig(port=0), MODEL, on_ready=on_ready)
    finally:
        signal.signal(signal.SIGINT, previous)
    ((status, body),) = answers
    assert status == 503 and "shutting down" in body["error"]["message"]
    assert totals["requests"] == 1 and totals["errors"] == 1
