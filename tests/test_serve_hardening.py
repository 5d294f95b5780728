"""Hostile and careless clients against a live server (uvicorn): a cap on open connections,
a header timeout for clients that trickle, a request with two Content-Length headers refused,
hostile JSON answered 400, escape sequences kept off the operator's terminal, and a fuzz test
of /v1/completions (seeded random bodies: never a 500, the server keeps answering)."""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from contextlib import ExitStack
from io import StringIO

import pytest

from tunesmith.generate import TextGenerator
from tunesmith.server import CompletionServer, RequestLog, ServerConfig


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return TextGenerator.load(str(tiny_model_dir), device="cpu")


@pytest.fixture()
def start(generator):
    with ExitStack() as stack:

        def start(log=None, **config) -> CompletionServer:
            server = CompletionServer(generator, ServerConfig(port=0, **config), "tiny", log)
            return stack.enter_context(server)

        yield start


def post(server, body: bytes, headers=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/completions", body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data)


def send_raw(server, data: bytes, wait: float = 30) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(data)
        return s.makefile("rb").read()


def still_serving(server) -> bool:
    return post(server, b'{"prompt": "x", "max_tokens": 1}')[0] == 200


def test_two_content_length_headers_are_refused(start):
    server = start()
    for second in (b"17", b"5"):
        answer = send_raw(
            server,
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n"
            b"Content-Length: " + second + b'\r\n\r\n{"prompt": "xyz"}',
        )
        assert answer.startswith(b"HTTP/1.1 400")
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert "more than one Content-Length" in body["error"]["message"]
    assert still_serving(server)


def test_a_client_that_trickles_its_headers_is_cut_off(start):
    server = start(header_timeout=0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        for _ in range(5):  # a byte now and then, never the end of the headers
            time.sleep(0.05)
            s.sendall(b"X")
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer
    assert time.monotonic() - started < 10
    assert still_serving(server)


def test_open_connections_are_capped(start):
    server = start(max_connections=3)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(3)]
    try:
        time.sleep(0.2)
        answer = send_raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
    finally:
        for s in idle:
            s.close()
    for _ in range(100):  # the server notices the closed connections
        if (
            send_raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[9:12]
            == b"200"
        ):
            break
        time.sleep(0.05)
    assert still_serving(server)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"prompt": "\\ud800", "max_tokens": 2}', "lone surrogate"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"prompt": "x", "max_tokens": ' + b"9" * 5001 + b"}", "too many digits"),
    ],
    ids=["lone-surrogate", "deep-nesting", "huge-number"],
)
def test_hostile_json_is_a_400(start, body, fragment):
    server = start()
    status, answer = post(server, body)
    assert status == 400 and fragment in answer["error"]["message"]
    assert still_serving(server)


def test_escape_sequences_never_reach_the_terminal_raw(start, tmp_path):
    terminal = StringIO()
    server = start(log=RequestLog(tmp_path / "requests.jsonl", echo=terminal))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/%1b]0;owned%07/%1b[2J%c2%9b31m")  # %c2%9b: U+009B, the C1 CSI
    assert conn.getresponse().status == 404
    post(server, json.dumps({"model": "\x1b[31mred", "prompt": "x"}).encode())
    server.close()
    printed = terminal.getvalue()
    assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed
    assert "/\\x1b]0;owned\\x07/\\x1b[2J\\x9b31m 404" in printed
    assert "`\\x1b[31mred`" in printed  # the error message quoting the model name
    first = json.loads((tmp_path / "requests.jsonl").read_text().splitlines()[0])
    assert first["path"] == "/\x1b]0;owned\x07/\x1b[2J\x9b31m"  # the record keeps what came


# Fuzzing --------------------------------------------------------------------------------

FIELDS = [
    "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "stream",
    "echo", "logprobs", "logit_bias", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "min_tokens", "stop_token_ids", "ignore_eos", "best_of", "suffix",
    "stream_options", "model", "user", "include_stop_str_in_output", "unknown",
]  # fmt: skip
TEXT = ["", "x", "Knock knock", "\x00\x1b[31m", "\ud800", "\U0001f600", "<|endoftext|>", "é" * 3]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, 2, 5, -1, 50256, 50257, 2**63, -(2**70), 10**30])
    if kind == 3:
        return rng.choice([0.0, 0.5, 1.5, -0.5, 1e308, 3.0, 0.999])
    if kind in (4, 5, 6):
        return rng.choice(TEXT)
    if kind in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {rng.choice(FIELDS + TEXT): random_value(rng, depth + 1) for _ in range(3)}


def random_body(rng: random.Random) -> bytes:
    body = {key: random_value(rng) for key in rng.sample(FIELDS, rng.randrange(1, 8))}
    if rng.random() < 0.4:  # mostly well-formed: a valid core plus a few random fields
        body = {k: v for k, v in list(body.items())[:2] if k not in ("prompt", "max_tokens")}
        body.update(prompt=rng.choice(TEXT[:4] + TEXT[5:]), max_tokens=rng.randrange(1, 4))
    if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
        body["max_tokens"] = min(abs(body["max_tokens"]), 4)  # bounded work per request
    for key in ("n", "best_of"):
        if isinstance(body.get(key), int) and body[key] > 3:
            body[key] = 3
    if rng.random() < 0.3:
        body.setdefault("max_tokens", 2)
    raw = json.dumps(body, allow_nan=False).encode("utf-8", "surrogatepass")
    mangle = rng.randrange(10)
    if mangle == 0:
        cut = rng.randrange(len(raw) + 1)
        raw = raw[:cut]  # truncated
    elif mangle == 1:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))  # noise
    return raw


def test_fuzzed_completion_bodies_never_get_a_500(start):
    server = start(max_n=3, max_choices=6)
    rng = random.Random(1234)
    statuses: dict[int, int] = {}
    for _ in range(300):
        status, answer = post(server, random_body(rng), {"Content-Type": "application/json"})
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, answer
        assert status == 200 or set(answer["error"]) == {"message", "type", "param", "code"}
    assert statuses.get(200, 0) > 10 and statuses.get(400, 0) > 100  # both kinds exercised
    assert still_serving(server)
