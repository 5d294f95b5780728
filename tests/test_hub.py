"""The hub without a network: one short attempt, then one line saying what to do.

Every endpoint here is local (a closed port, a socket that never answers, a fake hub on
127.0.0.1); no test reaches a real host.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time

import pytest

from tunesmith.checkpoint import HUB_LOGGER, _hub_messages_off_terminal, resolve_model_dir
from tunesmith.cli import main
from tunesmith.errors import ModelNotFoundError

ADVICE = ("connect once", "HF_ENDPOINT", "HF_HUB_OFFLINE=1", "local model folder")


@pytest.fixture()
def silent_endpoint(no_network, monkeypatch):
    """A hub endpoint that accepts connections and never answers (a blackholed host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    yield
    server.close()


def fake_hub(monkeypatch, status: int, headers: dict[str, str]):
    """A local HTTP server answering every request with `status`, set as HF_ENDPOINT."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    return server


def timed_failure(name: str) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_dir(name)
    return str(info.value), time.monotonic() - started


@pytest.mark.parametrize("endpoint", ["closed port", "never answers"])
def test_unreachable_hub_fails_within_5_s_saying_what_to_do(request, no_network, endpoint):
    if endpoint == "never answers":
        request.getfixturevalue("silent_endpoint")
    message, elapsed = timed_failure("someone/joke-model")
    assert elapsed < 5.0  # not huggingface_hub's ~30 s of retries
    assert "'someone/joke-model'" in message and "did not answer" in message
    assert all(advice in message for advice in ADVICE) and "\n" not in message
    assert not any(no_network.rglob("*.safetensors"))


def test_cli_unreachable_hub_is_one_line_without_retry_chatter(no_network, workspace, capsys):
    code = main(["generate", "--model", "someone/joke-model", "--length", "5"])
    err = capsys.readouterr().err
    assert code != 0
    errors = [line for line in err.splitlines() if "someone/joke-model" in line]
    assert len(errors) == 1 and "HF_ENDPOINT" in errors[0]
    assert "Retry" not in err and "Traceback" not in err
    log = next(workspace.glob("runs/**/log.txt")).read_text()
    assert "did not answer" in log


def test_offline_without_the_model_in_the_cache(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, _ = timed_failure("someone/joke-model")
    assert "not in the cache" in message and "HF_HUB_OFFLINE" in message
    assert "local model folder" in message


def test_unknown_repo_on_a_hub_that_answers_is_not_found(no_network, monkeypatch):
    server = fake_hub(monkeypatch, 404, {"X-Error-Code": "RepoNotFound"})
    try:
        message, _ = timed_failure("someone/typo-model")
    finally:
        server.shutdown()
    assert "not found on the Hugging Face Hub" in message


def test_hub_outage_fails_fast_with_the_status(no_network, monkeypatch):
    server = fake_hub(monkeypatch, 503, {})
    try:
        message, elapsed = timed_failure("someone/joke-model")
    finally:
        server.shutdown()
    assert elapsed < 5.0 and "HTTP 503" in message and "HF_ENDPOINT" in message


def test_hub_messages_go_to_the_run_log_not_the_terminal(workspace, capsys):
    from tunesmith.runs import recorded_run

    with recorded_run("generate", {}) as run:
        with _hub_messages_off_terminal():
            logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        log_path = run.log_path
    assert "Retrying in 1s" not in capsys.readouterr().err
    assert "Retrying in 1s" in log_path.read_text()
    assert HUB_LOGGER.name == "tunesmith.hub"
