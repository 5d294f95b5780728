"""`tunesmith ui`'s JSON API over a real tiny workflow: the runs table, a run's records read
from an offset, downloads kept inside the run's folder, actions, compare and the playground."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.cli import main  # noqa: E402
from tunesmith.generate import GenerationConfig, TextGenerator  # noqa: E402
from tunesmith.runs import open_workspace  # noqa: E402
from tunesmith.ui.app import create_app  # noqa: E402

FAST = ["--batch-size", "4", "--samples", "1", "--sample-tokens", "6", "--report-samples", "3"]
FAST += ["--no-progress", "--dropout", "0", "--max-steps", "6", "--eval-every", "3"]
LOCAL = "http://127.0.0.1"


def build_workflow(root: Path, model_dir: Path) -> Path:
    """runs/1 prepares 60 jokes, runs/2 and runs/3 fine-tune the tiny model on them (two lrs)."""
    jokes = root / "jokes.csv"
    with open(jokes, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "Joke"])
        for i in range(60):
            writer.writerow([i, f"Joke {i}: why did the chicken cross road {i}? To get away."])
    ws = root / "workspace"
    common = ["--workspace", str(ws)]
    data = ["data", str(jokes), "--column", "Joke", "--tokenizer", str(model_dir)]
    assert main([*data, *common]) == 0
    for lr in ("5e-4", "1e-3"):
        args = ["finetune", "--model", str(model_dir), "--data", "runs/1", "--sample-every", "3"]
        assert main([*args, *FAST, "--lr", lr, *common]) == 0
    return ws


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, tiny_model_dir) -> Path:
    return build_workflow(tmp_path_factory.mktemp("ui-workflow"), tiny_model_dir)


@pytest.fixture()
def client(workflow) -> TestClient:
    return TestClient(create_app(workflow), base_url=LOCAL)


def metric_lines(ws: Path, run_id: int) -> list[dict]:
    text = (ws / "runs" / str(run_id) / ".tunesmith" / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_runs_table_lists_the_workflow_newest_first(client):
    page = client.get("/api/runs").json()
    assert page["total"] == 3 and page["kinds"] == ["data", "finetune"]
    assert [r["id"] for r in page["runs"]] == [3, 2, 1]
    assert [r["kind"] for r in page["runs"]] == ["finetune", "finetune", "data"]
    assert all(r["status"] == "succeeded" for r in page["runs"])
    assert page["runs"][0]["used"] == [1] and page["runs"][2]["used"] == []
    assert page["runs"][0]["summary"].startswith("full fine-tune of")
    kept = client.get("/api/runs/1").json()["data_report"]["examples"]["kept"]
    assert page["runs"][2]["summary"].startswith(f"{kept} examples")
    finetunes = client.get("/api/runs", params={"kind": "finetune"}).json()
    assert [r["id"] for r in finetunes["runs"]] == [3, 2] and finetunes["total"] == 2
    found = client.get("/api/runs", params={"q": "1e-3"}).json()
    assert [r["id"] for r in found["runs"]] == [3]
    assert client.get("/api/runs", params={"status": "failed"}).json()["total"] == 0
    assert client.get("/api/runs", params={"q": "%"}).json()["total"] == 0  # LIKE is escaped


def test_a_thousand_runs_come_a_page_at_a_time(tmp_path):
    ws = open_workspace(tmp_path)
    ws.create_run("data", ["tunesmith", "run", "job-0"], {}, {})  # makes the index
    rows = [
        ("run" if i % 2 else "data", "succeeded", json.dumps(["tunesmith", "run", f"job-{i}"]))
        for i in range(1, 1000)
    ]
    with sqlite3.connect(ws.db_path) as db:  # one transaction: 999 more index rows
        db.executemany("INSERT INTO runs (kind, status, argv, started) VALUES (?, ?, ?, 0)", rows)
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    page = client.get("/api/runs", params={"limit": 50}).json()
    assert page["total"] == 1000 and len(page["runs"]) == 50
    assert page["runs"][0]["id"] == 1000 and page["runs"][-1]["id"] == 951
    last = client.get("/api/runs", params={"limit": 50, "offset": 950}).json()
    assert [r["id"] for r in last["runs"]][-1] == 1 and len(last["runs"]) == 50
    # "data" runs are the even i (ids i + 1); of those, job-990 ... job-998 contain "job-99".
    data = client.get("/api/runs", params={"kind": "data", "q": "job-99"}).json()
    assert [r["id"] for r in data["runs"]] == [999, 997, 995, 993, 991]
    assert client.get("/api/runs", params={"limit": 501}).status_code == 422


def test_a_finetune_page_has_everything_recorded(client, workflow):
    run = client.get("/api/runs/2").json()
    assert run["kind"] == "finetune" and run["params"]["lr"] == 5e-4
    assert run["started_at"] == open_workspace(workflow).get(2).started
    assert run["command"][:2] == ["tunesmith", "finetune"]
    assert run["host"] and run["versions"]["torch"] and run["device"] == "cpu"
    assert run["used"] == [{"run": 1, "ref": "runs/1"}] and run["used_by"] == []
    assert [s["step"] for s in run["samples"]] == [3, 6]
    quality = run["quality"]
    assert "validation perplexity" in quality["text"] and len(quality["samples"]) == 3
    assert all(isinstance(s["copied"], bool) for s in quality["samples"])
    report = (workflow / "runs" / "2" / "report.txt").read_text()
    assert all(repr(s["text"]) in report for s in quality["samples"])
    assert {o["path"] for o in run["outputs"]} >= {"loss.png", "report.txt", "model/config.json"}
    assert client.get("/api/runs/1").json()["used_by"] == [2, 3]
    data = client.get("/api/runs/1").json()
    assert data["data_report"]["examples"]["read"] == 60 and "lengths.png" in data["images"]
    assert client.get("/api/runs/99").status_code == 404


def test_metrics_and_log_are_read_from_an_offset(client, workflow):
    everything = client.get("/api/runs/2/metrics").json()
    assert everything["records"] == metric_lines(workflow, 2)
    path = workflow / "runs" / "2" / ".tunesmith" / "metrics.jsonl"
    end = everything["offset"]
    assert end == path.stat().st_size
    assert client.get("/api/runs/2/metrics", params={"offset": end}).json()["records"] == []
    original = path.read_bytes()
    try:
        with open(path, "ab") as f:
            f.write(b'{"step": 7, "train_loss": 1.5}\n{"step": 8, "train_lo')  # 2nd half-written
        more = client.get("/api/runs/2/metrics", params={"offset": end}).json()
        assert more["records"] == [{"step": 7, "train_loss": 1.5}]
        assert more["offset"] == end + len(b'{"step": 7, "train_loss": 1.5}\n')
    finally:
        path.write_bytes(original)
    log = client.get("/api/runs/2/log").json()
    text = (workflow / "runs" / "2" / ".tunesmith" / "log.txt").read_text()
    assert log["text"] == text and log["offset"] == len(text.encode())


def test_a_character_split_between_polls_waits_for_its_last_byte(tmp_path):
    ws = open_workspace(tmp_path)
    run = ws.create_run("run", ["x"], {}, {})
    log = ws.records_dir(run.id) / "log.txt"
    log.write_bytes("café ".encode() + "é".encode()[:1])
    client = TestClient(create_app(tmp_path), base_url=LOCAL)
    first = client.get(f"/api/runs/{run.id}/log").json()
    assert first["text"] == "café " and first["offset"] == len("café ".encode())
    with open(log, "ab") as f:
        f.write("é".encode()[1:] + b"!\n")
    rest = client.get(f"/api/runs/{run.id}/log", params={"offset": first["offset"]}).json()
    assert rest["text"] == "é!\n"


def test_downloads_stay_inside_the_run_folder(client, workflow, tmp_path):
    folder = workflow / "runs" / "2"
    good = client.get("/api/runs/2/download", params={"path": "report.txt"})
    assert good.status_code == 200 and good.content == (folder / "report.txt").read_bytes()
    assert good.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in good.headers["content-security-policy"]
    image = client.get("/api/runs/2/download", params={"path": "loss.png"})
    assert image.headers["content-disposition"].startswith("inline")
    for bad in ("../../etc/passwd", "../1/data.txt", "/etc/passwd", "model/../../1/data.txt"):
        answer = client.get("/api/runs/2/download", params={"path": bad})
        assert answer.status_code == 403, bad
        assert "passwd" not in answer.text or "root:" not in answer.text
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (folder / "escape.txt").symlink_to(secret)
    try:
        answer = client.get("/api/runs/2/download", params={"path": "escape.txt"})
        assert answer.status_code == 403 and "not yours" not in answer.text
    finally:
        (folder / "escape.txt").unlink()
    assert client.get("/api/runs/2/download", params={"path": "nope.txt"}).status_code == 404


def test_compare_overlays_runs_and_lists_the_parameters_that_differ(client, workflow):
    answer = client.get("/api/compare", params={"ids": "2,3"}).json()
    assert answer["differing"] == ["lr"]
    assert [r["id"] for r in answer["runs"]] == [2, 3]
    assert answer["runs"][1]["metrics"] == metric_lines(workflow, 3)
    assert client.get("/api/compare", params={"ids": "2"}).status_code == 409
    assert client.get("/api/compare", params={"ids": "2,x"}).status_code == 409


def test_delete_keeps_the_lineage_guard_of_runs_rm(tmp_path):
    ws = open_workspace(tmp_path)
    for run_id in (1, 2, 3):
        ws.create_run("run", ["tunesmith", "run"], {}, {})
        (ws.run_dir(run_id) / "out.txt").write_text("x")
        ws.finish(run_id, [], status="succeeded", ended=time.time(), duration=0.1, exit_code=0)
    ws.add_use(2, 1, "runs/1")
    ws.add_use(3, 1, "runs/1")
    ws = tmp_path
    client = TestClient(create_app(ws), base_url=LOCAL)
    refused = client.post("/api/runs/1/delete", headers={"X-Tunesmith": "1"})
    assert refused.status_code == 409 and "used by runs/2, runs/3" in refused.json()["error"]
    assert (ws / "runs" / "1").is_dir()
    assert client.post("/api/runs/3/delete").status_code == 403  # no action header
    assert client.post("/api/runs/3/delete", headers={"X-Tunesmith": "1"}).status_code == 200
    assert not (ws / "runs" / "3").exists() and open_workspace(ws).get(3) is None


def test_stop_ends_a_running_run_as_interrupted(tmp_path):
    script = (
        "import time\nfrom tunesmith.runs import recorded_run\n"
        f"with recorded_run('sleep', workspace={str(tmp_path)!r}, argv=['sleep']):\n"
        "    print('sleeping', flush=True)\n    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        ws = open_workspace(tmp_path)
        for _ in range(200):
            if ws.get(1) is not None and "sleeping" in _log(tmp_path, 1):
                break
            time.sleep(0.05)
        client = TestClient(create_app(tmp_path), base_url=LOCAL)
        headers = {"X-Tunesmith": "1"}
        assert client.post("/api/runs/1/stop", headers=headers).json() == {"stopping": 1}
        child.wait(timeout=30)  # the run ended (its script does not catch the interrupt)
        assert ws.get(1).status == "interrupted" and ws.get(1).error == "terminated (SIGTERM)"
        again = client.post("/api/runs/1/stop", headers=headers)
        assert again.status_code == 409 and "not running" in again.json()["error"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _log(ws: Path, run_id: int) -> str:
    path = ws / "runs" / str(run_id) / ".tunesmith" / "log.txt"
    return path.read_text() if path.exists() else ""


def test_playground_streams_what_the_generator_makes(client, workflow):
    params = {"source": "runs/2", "prompt": "Why", "length": 12, "seed": 7, "samples": 2}
    with client.stream("GET", "/api/playground/stream", params=params) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data:")]
    assert events[-1] == {"finished": True}
    done = [e for e in events if e.get("done")]
    assert [e["sample"] for e in done] == [0, 1] and all(e["tokens_per_s"] > 0 for e in done)
    generator = TextGenerator.load(str(workflow / "runs" / "2" / "model"))
    for k in (0, 1):
        text = "".join(e.get("text", "") for e in events if e.get("sample") == k)
        (expected,) = generator.generate("Why", 1, GenerationConfig(length=12, seed=7 + k))
        assert text == expected.text and done[k]["tokens"] == len(expected.token_ids)
    folder = {"source": str(workflow / "runs" / "3" / "model"), "length": 3}  # a folder loads too
    with client.stream("GET", "/api/playground/stream", params=folder) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith("data:")]
    assert json.loads(lines[-2][6:])["done"] and json.loads(lines[-1][6:]) == {"finished": True}
    for params, message in (({"source": "runs/2", "top_p": 2}, "top"), ({"source": "runs/9"}, "9")):
        with client.stream("GET", "/api/playground/stream", params=params) as answer:
            lines = [line for line in answer.iter_lines() if line.startswith("data:")]
        (event,) = [json.loads(line[6:]) for line in lines]
        assert message in event["error"]


def test_a_token_guards_everything_and_moves_into_a_cookie(workflow):
    client = TestClient(create_app(workflow, token="s3cret"), base_url="http://10.0.0.5:8080")
    assert client.get("/api/runs").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    login = client.get("/?token=s3cret", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    assert "httponly" in login.headers["set-cookie"].lower()
    assert client.get("/api/runs").status_code == 200  # the cookie now carries it


def test_without_a_token_only_local_host_names_are_answered(workflow):
    local = TestClient(create_app(workflow), base_url="http://localhost:8080")
    assert local.get("/").status_code == 200
    assert "script-src 'self'" in local.get("/").headers["content-security-policy"]
    rebound = TestClient(create_app(workflow), base_url="http://evil.example:8080")
    assert rebound.get("/api/runs").status_code == 403


def _start_ui(*args: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "ui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    assert line.startswith("tunesmith ui at http://"), proc.stderr.read()
    return proc, line.split()[3]


def test_cli_off_loopback_prints_a_token_url(workflow):
    import httpx

    # 127.0.0.2 is still this machine, but not the default address: a token is required.
    proc, url = _start_ui("--host", "127.0.0.2", "--workspace", str(workflow))
    try:
        assert "?token=" in url
        base = url.split("?")[0]
        assert httpx.get(base + "api/runs").status_code == 401
        token = url.split("token=")[1]
        answer = httpx.get(base + "api/runs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json()["total"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_errors_are_one_line(workflow, capsys):
    assert main(["ui", "--api-key", " "]) == 2
    assert capsys.readouterr().err.strip().startswith("tunesmith: error: the API key cannot")
    proc, url = _start_ui("--workspace", str(workflow))
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        assert main(["ui", "--port", port, "--workspace", str(workflow)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot listen on 127.0.0.1" in err[0] and "--port" in err[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
