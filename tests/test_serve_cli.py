"""`tunesmith serve` as a process: it serves a run, records itself as a run (request log,
metrics, lineage, never the API key), and a Ctrl-C or SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import openai
import pytest

from tunesmith.cli import main
from tunesmith.cli.serve import _without_key
from tunesmith.runs import open_workspace, recorded_run


@pytest.fixture()
def model_run(workspace, tiny_model_dir):
    """Run 1: a finetune-like run whose main output is the tiny model."""
    with recorded_run(kind="finetune", argv=["tunesmith", "finetune"]) as run:
        shutil.copytree(tiny_model_dir, run.dir / "model")
        run.set_main_output("model")
    return workspace


def start_serve(*args: str) -> tuple[subprocess.Popen, str]:
    """Start `tunesmith serve --port 0 ...`; return it and the URL it prints once ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    watchdog = threading.Timer(120, proc.kill)  # a server that never gets ready fails the test
    watchdog.start()
    try:
        line = proc.stdout.readline()
    finally:
        watchdog.cancel()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"no URL printed: {line!r}; stderr: {proc.stderr.read()}")
    return proc, match[1]


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_a_run_then_stop_it_cleanly(model_run, sig):
    proc, url = start_serve("--model", "runs/1", "--api-key", "s3cret-key")
    try:
        api = openai.OpenAI(base_url=url, api_key="s3cret-key", max_retries=0, timeout=30)
        assert [m.id for m in api.models.list().data] == ["runs/1"]
        r = api.completions.create(model="runs/1", prompt="Hi", max_tokens=3, seed=1)
        chunks = api.completions.create(
            model="runs/1", prompt="Hi", max_tokens=3, seed=1, stream=True
        )
        assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
    finally:
        code, err = stop(proc, sig)
    assert code == 0, err
    assert "run 2 succeeded" in err

    ws = open_workspace(model_run)
    run = ws.get(2)
    assert (run.kind, run.status, run.exit_code) == ("serve", "succeeded", 0)
    assert ws.used(2) == [(1, "runs/1")]
    assert run.metrics["requests"] == 4 and run.metrics["errors"] == 1
    assert run.metrics["completion_tokens"] == r.usage.completion_tokens * 2
    assert run.summary.startswith("served runs/1: 4 requests")
    assert run.params["api_key"] is True and "--api-key" in run.argv
    records = [p for p in (model_run / "runs" / "2").rglob("*") if p.is_file()]
    assert not [p for p in records if "s3cret-key" in p.read_text(errors="replace")]
    lines = (model_run / "runs" / "2" / "requests.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in lines]
    assert [e["status"] for e in log] == [200, 200, 200, 401]
    assert log[1]["prompt_tokens"] == 1 and log[1]["completion_tokens"] >= 1


def test_serve_refuses_a_busy_port_and_the_run_fails(workspace, tiny_model_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "--model", str(tiny_model_dir), "--port", port]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    (run,) = open_workspace(workspace).list_runs()
    assert (run.kind, run.status, run.exit_code) == ("serve", "failed", 2)


@pytest.mark.parametrize(
    "argv, recorded",
    [
        (["serve", "--api-key", "k"], ["serve", "--api-key", "***"]),
        (["serve", "--api-key=k"], ["serve", "--api-key=***"]),
        (["serve", "--api-k", "k", "--port", "1"], ["serve", "--api-k", "***", "--port", "1"]),
        (["serve", "--model", "m"], ["serve", "--model", "m"]),
    ],
)
def test_the_api_key_is_masked_in_the_recorded_command(argv, recorded):
    assert _without_key(argv) == recorded


def test_serve_flags_come_from_server_config():
    from tunesmith.cli import build_parser
    from tunesmith.cli.config_args import given_options
    from tunesmith.server import ServerConfig

    argv = ["serve", "--allow-origin", "http://a.example", "--allow-origin", "*"]
    argv += ["--max-connections", "3", "--header-timeout", "2.5", "--no-continuous"]
    config = ServerConfig(**given_options(build_parser().parse_args(argv), ServerConfig))
    assert config.allow_origin == ("http://a.example", "*") and config.continuous is False
    assert (config.max_connections, config.header_timeout) == (3, 2.5)
    assert (config.port, config.max_batch_size) == (8000, 16)  # the dataclass's defaults


def test_a_bad_server_setting_is_one_line_and_exit_2(workspace, capsys):
    assert main(["serve", "--header-timeout", "0", "--no-run"]) == 2
    err = capsys.readouterr().err
    assert err == "tunesmith: error: header-timeout must be more than 0 seconds\n"


def test_serve_quantize_int8_answers_as_the_quantized_generator(model_run, tiny_model_dir):
    from tunesmith.generate import GenerationConfig, TextGenerator

    proc, url = start_serve("--model", "runs/1", "--quantize", "int8")
    try:
        api = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=30)
        served = api.completions.create(model="runs/1", prompt="Hi", max_tokens=6, temperature=0)
    finally:
        code, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert open_workspace(model_run).get(2).params["quantize"] == "int8"
    local = TextGenerator.load(str(tiny_model_dir), quantize="int8")
    config = GenerationConfig(length=6, temperature=0, ignore_eos=True)
    expected = local.generate("Hi", 1, config)[0].text
    assert served.choices[0].text == expected[: len(served.choices[0].text)]
    assert served.choices[0].text
