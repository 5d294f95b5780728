"""The server process side: uvicorn serving the FastAPI app (app.py) from a thread, with the
model worker (batcher.py) beside it, and the connection-level guards uvicorn lacks:

- a cap on open connections (one more is answered 503 and closed at once);
- a header timeout (a client that trickles its headers is cut off after `header_timeout`);
- a request with more than one Content-Length header is refused (h11 merges equal ones);
- every protocol error is a JSON body, like every other error.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tunesmith import hugepages
from tunesmith.checkpoint import resolve_model_dir
from tunesmith.generate import TextGenerator
from tunesmith.listen import listen_socket
from tunesmith.runs.references import resolve_reference
from tunesmith.server.app import create_app
from tunesmith.server.batcher import Batcher
from tunesmith.server.chat import ChatTemplate
from tunesmith.server.completions import CompletionService
from tunesmith.server.config import ServerConfig
from tunesmith.server.metrics import ServerMetrics
from tunesmith.server.protocol import error_body
from tunesmith.server.requestlog import RequestLog

MAX_HEAD_BYTES = 64 * 1024  # request line and headers


class CompletionServer:
    """An OpenAI-compatible server for one loaded model.

    with CompletionServer(generator, ServerConfig(port=0)) as server:  # serves in a thread
        client = openai.OpenAI(base_url=server.url, api_key="-")
    """

    def __init__(
        self,
        generator: TextGenerator,
        config: ServerConfig | None = None,
        model_name: str | None = None,
        log: RequestLog | None = None,
        chat_template: ChatTemplate | None = None,
    ):
        self.config = config or ServerConfig()
        self.generator = generator
        self.model_name = model_name or generator.source or "model"
        self.log = log if log is not None else RequestLog()
        self.chat_template = chat_template or ChatTemplate()
        self.created = int(time.time())
        c = self.config
        # A server decodes for a long time: its weights in 2 MB pages make every step faster.
        hugepages.move_weights(generator.model)
        self.batcher = Batcher(generator, c.max_batch_size, c.batch_wait, c.continuous)
        self.service = CompletionService(
            generator, self.batcher, self.model_name, c.timeout, c.max_n, c.max_choices
        )
        self.metrics = ServerMetrics(lambda: self.batcher.waiting, lambda: self.batcher.batch_size)
        self.service.on_first_token = self.metrics.ttft.observe
        self._socket: socket.socket | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CompletionServer:
        """Bind the port and start the model worker; then call serve_forever()."""
        host, port = self.config.host, self.config.port
        sock = listen_socket(host, port)
        self._socket = sock
        self._uvicorn = uvicorn.Server(self._uvicorn_config())
        self.batcher.start()
        return self

    def _uvicorn_config(self) -> uvicorn.Config:
        config = uvicorn.Config(
            create_app(self),
            http=_guarded_protocol(self.config),
            lifespan="off",
            ws="none",
            access_log=False,  # RequestLog writes one safe line per request instead
            log_config=None,
            log_level="warning",
            timeout_keep_alive=max(1, round(self.config.keep_alive)),
            timeout_graceful_shutdown=2,
            server_header=False,
            date_header=False,
        )
        return config

    @property
    def port(self) -> int:
        assert self._socket is not None, "start() the server first"
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take (…/v1)."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def serve_forever(self) -> None:
        """Serve until stop() (from another thread) or a KeyboardInterrupt in this one."""
        assert self._uvicorn is not None and self._socket is not None, "start() the server first"
        done = threading.Event()

        def run() -> None:
            try:
                self._uvicorn.run(sockets=[self._socket])
            finally:
                done.set()

        # Wait on an Event, not on Thread.join: a Ctrl-C that interrupts join() leaves the
        # thread marked as stopped while it still runs (CPython gh-90882).
        threading.Thread(target=run, name="tunesmith-http").start()
        try:
            while not done.wait(0.2):  # short waits: a Ctrl-C reaches this thread at once
                pass
        except BaseException:
            self.batcher.close()  # requests in flight are answered 503 before uvicorn stops
            raise
        finally:
            self._uvicorn.should_exit = True
            done.wait()

    def stop(self) -> None:
        """Make serve_forever() return (call it from another thread)."""
        assert self._uvicorn is not None, "start() the server first"
        self._uvicorn.should_exit = True

    def close(self) -> None:
        """Stop serving; work in flight fails with 503 (the model worker stops first)."""
        self.batcher.close()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._socket is not None:
            self._socket.close()
        self.log.close()

    def __enter__(self) -> CompletionServer:
        self.start()
        self._thread = threading.Thread(target=self.serve_forever, name="tunesmith-serve")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(
    model: str | TextGenerator,
    config: ServerConfig | None = None,
    model_name: str | None = None,
    log: RequestLog | None = None,
    on_ready: Callable[[CompletionServer], None] | None = None,
    chat_template: ChatTemplate | None = None,
) -> dict[str, int]:
    """Serve `model` (a hub id, folder, run path or loaded generator) until Ctrl-C or SIGTERM
    (a KeyboardInterrupt in the main thread), then shut down cleanly and return the totals
    of the request log. A Ctrl-C is the normal way to stop a server, so it is not re-raised.
    The chat template comes from the model's folder unless one is given."""
    if isinstance(model, TextGenerator):
        generator = model
    else:
        path = str(resolve_reference(model))  # runs/N: the run's model
        generator = TextGenerator.load(path)
        generator.source = str(model)  # clients see the name they were given
        chat_template = chat_template or ChatTemplate.from_folder(resolve_model_dir(path))
    server = CompletionServer(generator, config, model_name, log, chat_template)
    server.start()
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return server.log.totals()


# h11 accepts bare LF line ends as well as CRLF.
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:", re.IGNORECASE)
_END_OF_HEAD = re.compile(rb"\n\r?\n")


def _guarded_protocol(config: ServerConfig) -> type[H11Protocol]:
    class Guarded(_GuardedProtocol):
        max_connections = config.max_connections
        header_timeout = config.header_timeout

    return Guarded


class _GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the guards listed in the module docstring."""

    max_connections = 256
    header_timeout = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head = b""
        self._reading_head = True
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self._refuse(503, "the server has too many open connections; try again shortly")
            return
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        if self._reading_head and not self.transport.is_closing():
            self._refuse(
                408, f"the request headers did not arrive within {self.header_timeout:g} s"
            )

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: the rest of what the client sends is not read
        if self._reading_head:
            self._head = (self._head + data)[:MAX_HEAD_BYTES]  # h11 refuses longer heads
            end = _END_OF_HEAD.search(self._head)
            if end is not None:
                head, self._head = self._head[: end.start() + 1], b""
                self._reading_head = False
                if self._head_timer is not None:
                    self._head_timer.cancel()
                if len(_CONTENT_LENGTH.findall(head)) > 1:
                    self._refuse(400, "the request has more than one Content-Length header")
                    return
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._reading_head = True  # the next request on this connection has its own limit
        self._head = b""
        if not self.transport.is_closing():
            self._arm_head_timer()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"invalid HTTP request: {msg}")

    def _refuse(self, status: int, message: str) -> None:
        """Answer with a JSON error and close, whatever state the connection is in."""
        body = json.dumps(error_body(message)).encode()
        reason = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}
        head = (
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\ncontent-type: application/json"
            f"\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        cycle = self.cycle
        self._refused = True
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(head + body)
        # Closing with the client's bytes unread would reset the connection, and the client
        # could lose the answer: end our side, read and drop theirs for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)
