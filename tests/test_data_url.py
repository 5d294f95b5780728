"""URL sources against a local HTTP server: download kept in the run, retries, limits, errors."""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import threading
import time

import pytest

from tunesmith.data import DataConfig, load_training_examples, prepare_data
from tunesmith.data import sources as sources_module
from tunesmith.errors import DataError


class Handler(http.server.SimpleHTTPRequestHandler):
    hits: dict[str, int]

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/flaky.txt" and self.hits[self.path] <= 2:
            self.send_error(503, "try later")
        elif self.path == "/down.txt":
            self.send_error(500, "broken")
        elif self.path == "/slow.txt":
            time.sleep(2)
            self.send_error(500, "too late")
        elif self.path == "/stream.txt":  # no Content-Length: the limit applies while reading
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"word " * 2000)
        elif self.path == "/records":
            body = b'[{"text": "from json"}]'
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up on purpose (size limit, timeout) are not errors here


@pytest.fixture()
def server(tmp_path, seed_csv, monkeypatch):
    """http://127.0.0.1:PORT serving a temp folder (with the seed CSV), plus its hit counts."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(seed_csv, root / "onelinefun.csv")
    (root / "lines.txt.gz").write_bytes(gzip.compress(b"one\ntwo\n"))
    (root / "flaky.txt").write_text("finally\n")
    monkeypatch.setattr(sources_module, "RETRY_BACKOFF_S", 0.0)
    hits: dict[str, int] = {}
    handler = type("H", (Handler,), {"hits": hits})

    def make(*args, **kwargs):
        return handler(*args, directory=str(root), **kwargs)

    httpd = QuietServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def config(**options) -> DataConfig:
    return DataConfig(tokenizer=None, **options)


def test_seed_csv_by_url_is_read_and_kept(tmp_path, server, seed_csv):
    url, _ = server
    out = tmp_path / "out"
    result = prepare_data([f"{url}/onelinefun.csv"], config(), out)
    assert result.kept == 2948 and result.sources[0].column == "Joke"
    assert result.sources[0].kept == "source/onelinefun.csv"
    assert (out / "source" / "onelinefun.csv").read_bytes() == seed_csv.read_bytes()
    assert not list((out / "source").glob("*.part"))
    assert len((out / "data.txt").read_text().splitlines()) == 2948


def test_gzip_url_and_content_type(tmp_path, server):
    url, _ = server
    result = prepare_data([f"{url}/lines.txt.gz", f"{url}/records"], config(), tmp_path / "o")
    assert [s.format for s in result.sources] == ["text", "json"]
    assert (tmp_path / "o" / "data.txt").read_text() == "one\ntwo\nfrom json\n"


def test_404_is_a_clean_error_without_retries(tmp_path, server):
    url, hits = server
    message = r"cannot download .*/missing.csv: HTTP 404 .*check the URL"
    with pytest.raises(DataError, match=message):
        prepare_data([f"{url}/missing.csv"], config(), tmp_path / "o")
    assert hits["/missing.csv"] == 1
    assert not (tmp_path / "o" / "data.txt").exists()


def test_5xx_is_retried(tmp_path, server):
    url, hits = server
    result = prepare_data([f"{url}/flaky.txt"], config(retries=3), tmp_path / "o")
    assert result.kept == 1 and hits["/flaky.txt"] == 3
    with pytest.raises(DataError, match=r"HTTP 500 .* \(after 3 tries\)"):
        prepare_data([f"{url}/down.txt"], config(retries=2), tmp_path / "o2")
    assert hits["/down.txt"] == 3


def test_size_limit(tmp_path, server):
    url, _ = server
    limit = r"larger than the download limit of .* MB; raise --max-download-mb"
    with pytest.raises(DataError, match=limit):  # known from Content-Length
        prepare_data([f"{url}/onelinefun.csv"], config(max_download_mb=0.01), tmp_path / "a")
    with pytest.raises(DataError, match=limit):  # found while streaming
        prepare_data([f"{url}/stream.txt"], config(max_download_mb=0.005), tmp_path / "b")
    assert not list((tmp_path / "b" / "source").glob("*"))


def test_unreachable_and_timed_out(tmp_path, server):
    url, _ = server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"cannot download .*: .*refused.* \(after 2 tries\)"):
        prepare_data([f"http://127.0.0.1:{closed_port}/x.csv"], config(retries=1), tmp_path / "a")
    with pytest.raises(DataError, match=r"cannot download .*/slow.txt: .*timed out"):
        prepare_data([f"{url}/slow.txt"], config(timeout=0.3, retries=0), tmp_path / "b")


def test_load_training_examples_from_a_url(server):
    url, _ = server
    train, val = load_training_examples(f"{url}/onelinefun.csv")
    assert len(train) + len(val) == 2948 and len(val) == 147


def test_cli_url_run_keeps_the_download_and_fails_cleanly(workspace, server, capsys):
    from tunesmith.cli import main
    from tunesmith.runs import open_workspace

    url, _ = server
    assert main(["data", f"{url}/onelinefun.csv", "--tokenizer", "none"]) == 0
    assert (workspace / "runs" / "1" / "source" / "onelinefun.csv").is_file()
    assert main(["data", f"{url}/gone.csv", "--tokenizer", "none"]) == 1
    err = capsys.readouterr().err
    assert f"tunesmith: error: cannot download {url}/gone.csv: HTTP 404" in err
    run = open_workspace(workspace).get(2)
    assert run.status == "failed" and not (workspace / "runs" / "2" / "data.txt").exists()
