"""The HTTP side: routes, the API key, body limits, server-sent events, the request log.

A threaded stdlib HTTP server: each connection has its own thread, so `/health` and
`/v1/models` answer at once while completions wait for the single model worker (batcher.py).
"""

from __future__ import annotations

import hmac
import json
import select
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tunesmith.errors import UsageError
from tunesmith.generate import TextGenerator
from tunesmith.options import require_finite
from tunesmith.server import protocol
from tunesmith.server.batcher import Batcher
from tunesmith.server.completions import CompletionService
from tunesmith.server.protocol import APIError
from tunesmith.server.requestlog import RequestLog

ROUTES = {"/health": "GET", "/v1/models": "GET", "/v1/completions": "POST"}


@dataclass
class ServerConfig:
    """Where to listen and the limits each request is held to."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port
    api_key: str | None = None  # when set, every request needs `Authorization: Bearer KEY`
    max_batch_size: int = 16  # sequences decoded together
    batch_wait: float = 0.01  # seconds an idle model waits for requests sent together
    timeout: float = 120.0  # seconds per request, from arrival to its last token
    max_body_bytes: int = 1 << 20
    max_n: int = 16
    max_choices: int = 64  # prompts x n in one request

    def __post_init__(self) -> None:
        require_finite(self)
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("the API key cannot be empty")
        for name in ("max_batch_size", "max_body_bytes", "max_n", "max_choices"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.timeout <= 0 or self.batch_wait < 0:
            raise UsageError("the timeout must be > 0 and the batch wait >= 0")


class CompletionServer:
    """An OpenAI-compatible completion server for one loaded model.

    with CompletionServer(generator, ServerConfig(port=0)) as server:  # serves in a thread
        client = openai.OpenAI(base_url=server.url, api_key="-")
    """

    def __init__(
        self,
        generator: TextGenerator,
        config: ServerConfig | None = None,
        model_name: str | None = None,
        log: RequestLog | None = None,
    ):
        self.config = config or ServerConfig()
        self.model_name = model_name or generator.source or "model"
        self.log = log if log is not None else RequestLog()
        self.created = int(time.time())
        self.batcher = Batcher(generator, self.config.max_batch_size, self.config.batch_wait)
        self.service = CompletionService(
            generator, self.batcher, self.model_name, self.config.timeout
        )
        self._active = 0  # requests being answered, so that close() can let them finish
        self._idle = threading.Condition()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CompletionServer:
        """Bind the port and start the model worker; then call serve_forever()."""
        try:
            self._httpd = _HTTPServer(self.config.host, self.config.port, self)
        except OSError as e:
            raise UsageError(
                f"cannot listen on {self.config.host}:{self.config.port}: {e.strerror or e}; "
                f"pick another --port (0 picks a free one)"
            ) from None
        self.batcher.start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take (…/v1)."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def serve_forever(self) -> None:
        assert self._httpd is not None, "start() the server first"
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Make serve_forever() return (call it from another thread)."""
        assert self._httpd is not None, "start() the server first"
        self._httpd.shutdown()

    def close(self, drain: float = 2.0) -> None:
        """Stop accepting, fail the work in flight (503), give its answers `drain` seconds."""
        if self._thread is not None:  # serve_forever runs in our thread: stop it there
            self.stop()
            self._thread.join()
        self.batcher.close()
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=drain)
        if self._httpd is not None:
            self._httpd.server_close()
        self.log.close()

    def __enter__(self) -> CompletionServer:
        self.start()
        self._thread = threading.Thread(target=self.serve_forever, name="tunesmith-http")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _busy(self, delta: int) -> None:
        with self._idle:
            self._active += delta
            self._idle.notify_all()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up the exit
    request_queue_size = 128

    def __init__(self, host: str, port: int, app: CompletionServer):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tunesmith"
    timeout = 60  # seconds a connection may sit idle or trickle a request
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # RequestLog prints one line per request instead

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        app._busy(+1)
        started = time.monotonic()
        path = urlsplit(self.path).path.rstrip("/") or "/"
        self._entry: dict[str, Any] = {"time": round(time.time(), 3), "method": method}
        self._entry["path"] = path
        self._body_read = method in ("GET", "DELETE") and not self.headers.get("Content-Length")
        self._streaming = False
        try:
            try:
                self._check_key(app.config.api_key)
                self._route(app, method, path)
            except APIError as e:
                self._entry.update(status=e.status, error=e.message)
                self._send_json(e.status, e.body(), _allow(path) if e.status == 405 else None)
            except (ConnectionError, TimeoutError):
                raise
            except Exception as e:  # a bug: say so, and keep serving
                traceback.print_exc()
                if self._streaming:  # the status line is gone: end the stream abruptly
                    self._entry.update(status=500, error=f"{type(e).__name__}: {e}")
                    self.close_connection = True
                    return
                error = APIError(
                    500, f"internal error: {type(e).__name__}: {e}", type="server_error"
                )
                self._entry.update(status=500, error=error.message)
                self._send_json(500, error.body())
        except (ConnectionError, TimeoutError):
            self._entry.setdefault("status", 499)  # the client went away, or stalled
            self.close_connection = True
        finally:
            if not self._body_read:
                self.close_connection = True  # unread bytes would be taken for the next request
                self._discard_body(4 * app.config.max_body_bytes)
            app._busy(-1)
            if path != "/health":
                self._entry["latency_s"] = round(time.monotonic() - started, 4)
                self._entry.setdefault("status", 200)
                app.log.record(self._entry)

    def _route(self, app: CompletionServer, method: str, path: str) -> None:
        allowed = ROUTES.get(path) or ("GET" if path.startswith("/v1/models/") else None)
        if allowed is None:
            raise APIError(404, f"no route for {method} {path}", code="not_found")
        if method != allowed:
            raise APIError(405, f"{path} takes {allowed}, not {method}", code="method_not_allowed")
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            card = protocol.model_card(app.model_name, app.created)
            self._send_json(200, {"object": "list", "data": [card]})
        elif path.startswith("/v1/models/"):
            name = path.removeprefix("/v1/models/")
            if name != app.model_name:
                raise APIError(
                    404, f"The model `{name}` does not exist", "model", "model_not_found"
                )
            self._send_json(200, protocol.model_card(app.model_name, app.created))
        else:
            self._complete(app)

    def _check_key(self, key: str | None) -> None:
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            raise APIError(
                401,
                "Incorrect or missing API key: send the header `Authorization: Bearer KEY` "
                "with the key the server was started with",
                code="invalid_api_key",
            )

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise APIError(411, "send the body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            raise APIError(411, "the request needs a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            raise APIError(400, f"bad Content-Length: {length!r}") from None
        if size < 0:
            raise APIError(400, f"bad Content-Length: {length!r}")
        if size > limit:
            raise APIError(413, f"the request body is {size} bytes; the limit is {limit} bytes")
        body = self.rfile.read(size)
        if len(body) < size:
            raise ConnectionResetError("the client sent less than its Content-Length")
        self._body_read = True
        return body

    def _client_connected(self) -> bool:
        """False once the client has closed its end (it gave up waiting)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return not readable or self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _discard_body(self, cap: int) -> None:
        """Read a refused body (up to cap bytes) before the connection closes: closing a
        socket with unread data resets it, and the client could lose our answer."""
        try:
            left = min(int(self.headers.get("Content-Length") or 0), cap)
            self.connection.settimeout(1.0)
            while left > 0:
                data = self.rfile.read1(min(left, 1 << 16))
                if not data:
                    return
                left -= len(data)
        except (OSError, ValueError):
            pass

    def _complete(self, app: CompletionServer) -> None:
        body = self._read_body(app.config.max_body_bytes)
        req = protocol.parse_completion_request(body, app.config.max_n, app.config.max_choices)
        completion = app.service.prepare(req)
        self._entry.update(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=0,
            choices=len(completion.sequences),
            stream=req.stream,
        )
        try:
            if req.stream:
                self._stream(app, completion)
            else:
                self._send_json(200, app.service.complete(completion, self._client_connected))
        finally:
            self._entry["completion_tokens"] = completion.completion_tokens

    def _stream(self, app: CompletionServer, completion) -> None:
        job = app.service.submit(completion)  # errors before the first byte are plain JSON
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._streaming = True
        chunks = app.service.stream(completion, job)
        try:
            for chunk in chunks:
                self._send_event(chunk)
        except APIError as e:  # mid-stream: the status line is gone, so say it in an event
            self._entry.update(status=e.status, error=e.message)
            self._send_event(e.body())
        finally:
            chunks.close()  # a client that left frees its rows in the batch
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")

    def _send_event(self, data: dict) -> None:
        self._send_chunk(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if not self._body_read:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _allow(path: str) -> dict[str, str]:
    return {"Allow": ROUTES.get(path, "GET")}
