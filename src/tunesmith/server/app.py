"""The FastAPI application: routes, the API key, CORS, body limits, server-sent events, and
one place that turns every error into OpenAI's JSON error body (never an HTML page).

Routes: /v1/completions, /v1/chat/completions, /v1/models[/{id}], /tokenize, /detokenize,
/version, /metrics (Prometheus) and /health.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import traceback
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from tunesmith.server import protocol
from tunesmith.server.batcher import Job
from tunesmith.server.chat import chat_complete, chat_stream, prepare_chat
from tunesmith.server.completions import Completion
from tunesmith.server.metrics import CONTENT_TYPE
from tunesmith.server.protocol import APIError, parse_body
from tunesmith.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from tunesmith.version import __version__

if TYPE_CHECKING:
    from tunesmith.server.server import CompletionServer

UNLOGGED = ("/health",)  # liveness probes stay out of the request log


def create_app(server: CompletionServer) -> FastAPI:
    app = FastAPI(
        title="tunesmith",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(_api_key(server.config.api_key))],
    )
    app.state.server = server
    _add_error_handlers(app)
    _add_routes(app, server)
    _add_completion_routes(app, server)
    app.add_middleware(AnswerOptions)
    if server.config.allow_origin:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(server.config.allow_origin),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id"],
        )
    app.add_middleware(RequestRecorder, server=server)
    return app


class AnswerOptions:
    """ASGI middleware: OPTIONS gets 204 and the methods a path takes (CORS preflights,
    when --allow-origin is set, are answered before this by the CORS middleware)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            return await self.app(scope, receive, send)
        methods = {"OPTIONS"}
        for route in scope["app"].routes:
            match, _ = route.matches({**scope, "method": "GET"})
            if match.name != "NONE":
                methods |= set(getattr(route, "methods", ()))
        response = Response(status_code=204, headers={"Allow": ", ".join(sorted(methods))})
        await response(scope, receive, send)


# Errors ----------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> Response:
        return error_response(request, e)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        if e.status_code == 404:
            message, code = f"no route for {request.method} {request.url.path}", "not_found"
        elif e.status_code == 405:
            allowed = (e.headers or {}).get("Allow", "")
            message = f"{request.url.path} takes {allowed}, not {request.method}"
            code = "method_not_allowed"
        else:
            message, code = str(e.detail), None
        return error_response(
            request, APIError(e.status_code, message, code=code, headers=dict(e.headers or {}))
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> Response:
        return error_response(request, APIError(400, f"bad request: {e.errors()[0]['msg']}"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> Response:
        traceback.print_exception(e)  # for whoever runs the server: this is a bug
        error = APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error")
        return error_response(request, error)


def error_response(request: Request, e: APIError) -> Response:
    entry = _entry(request)
    entry.update(status=e.status, error=e.message)
    headers = dict(e.headers)
    if e.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if entry.get("unread_body"):
        headers["Connection"] = "close"  # unread bytes would be taken for the next request
    return JSONResponse(e.body(), e.status, headers)


def _api_key(key: str | None):
    async def check(request: Request) -> None:
        if key is None or request.method == "OPTIONS":
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            raise APIError(
                401,
                "Incorrect or missing API key: send the header `Authorization: Bearer KEY` "
                "with the key the server was started with",
                code="invalid_api_key",
            )

    return check


# The request log -----------------------------------------------------------------------


class RequestRecorder:
    """ASGI middleware: times each request and records it once its answer is complete
    (for a stream, after its last chunk or when the client left)."""

    def __init__(self, app, server: CompletionServer):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        entry: dict[str, Any] = {"time": round(time.time(), 3), "method": scope["method"]}
        entry["path"] = scope["path"].rstrip("/") or "/"
        scope.setdefault("state", {})["log"] = entry
        status: list[int] = []

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as e:
            entry.setdefault("status", 500)
            entry.setdefault("error", f"internal error: {type(e).__name__}: {e}")
            raise
        finally:
            entry.pop("unread_body", None)
            entry.setdefault("status", status[0] if status else 499)
            entry["latency_s"] = round(time.monotonic() - started, 4)
            route = scope.get("route")
            if entry["path"] not in UNLOGGED:
                self.server.log.record(entry)
            self.server.metrics.observe({**entry, "path": getattr(route, "path", "unrouted")})


def _entry(request: Request) -> dict[str, Any]:
    return request.scope.setdefault("state", {}).setdefault("log", {})


# Routes ------------------------------------------------------------------------------------


def _add_routes(app: FastAPI, server: CompletionServer) -> None:
    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.api_route("/version", methods=["GET", "HEAD"])
    async def version() -> dict:
        return {"version": __version__}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models() -> dict:
        return {"object": "list", "data": [_card(server)]}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"])
    async def model(model_id: str) -> dict:
        # The openai client percent-encodes a slash (runs%2F3); the path arrives decoded.
        if model_id != server.model_name:
            raise APIError(
                404, f"The model `{model_id}` does not exist", "model", "model_not_found"
            )
        return _card(server)

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)


def _add_completion_routes(app: FastAPI, server: CompletionServer) -> None:
    service, config = server.service, server.config

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict:
        req = parse_body(await read_body(request, config.max_body_bytes), TokenizeRequest)
        service.check_model(req.model)
        text = (
            req.prompt
            if req.prompt is not None
            else server.chat_template.render(req.messages or [])
        )
        tokens = server.generator.tokenizer.encode(text)
        return {"count": len(tokens), "max_model_len": service.context_length, "tokens": tokens}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict:
        req = parse_body(await read_body(request, config.max_body_bytes), DetokenizeRequest)
        service.check_model(req.model)
        bad = [t for t in req.tokens if not 0 <= t < service.vocab_size]
        if bad:
            raise APIError(400, f"tokens: token id {bad[0]} is outside the vocabulary", "tokens")
        return {"prompt": server.generator.tokenizer.decode(req.tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = parse_body(await read_body(request, config.max_body_bytes), CompletionRequest)
        completion = service.prepare(req)
        if req.stream:
            return _stream(request, completion, service.stream)
        return await _answer(request, completion, service.complete)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        req = parse_body(await read_body(request, config.max_body_bytes), ChatCompletionRequest)
        completion = prepare_chat(service, req, server.chat_template)

        def stream(c, job):
            return chat_stream(service, c, job)

        if req.stream:
            return _stream(request, completion, stream)

        async def whole(c, job):
            return await chat_complete(service, c, job)

        return await _answer(request, completion, whole)


def _card(server: CompletionServer) -> dict:
    return protocol.model_card(server.model_name, server.created, server.service.context_length)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (from Content-Length when announced)."""
    entry = _entry(request)
    entry["unread_body"] = True
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(413, f"the request body is {length} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    entry.pop("unread_body", None)
    return b"".join(chunks)


def _note(request: Request, completion: Completion, stream: bool) -> dict[str, Any]:
    entry = _entry(request)
    entry.update(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=0,
        choices=len(completion.sequences),
        stream=stream,
    )
    unknown = completion.request.unknown_fields()
    if unknown:
        entry["warning"] = "ignored unknown fields: " + ", ".join(unknown)
    return entry


async def _answer(request: Request, completion: Completion, body) -> Response:
    """A whole response; a client that leaves while it waits is dropped from the batch."""
    entry = _note(request, completion, stream=False)
    server: CompletionServer = request.app.state.server
    job = server.service.submit(completion)
    work = asyncio.ensure_future(body(completion, job))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        entry["completion_tokens"] = completion.completion_tokens
    if not work.done():
        job.cancel()
        work.cancel()
        entry.update(status=499, error="the client went away")
        return Response(status_code=204)  # never sent: nobody is there
    gone.cancel()
    entry["completion_tokens"] = completion.completion_tokens
    return JSONResponse(work.result())


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _stream(request: Request, completion: Completion, chunks) -> Response:
    entry = _note(request, completion, stream=True)
    server: CompletionServer = request.app.state.server
    job: Job = server.service.submit(completion)  # errors before the first byte are plain JSON
    return StreamingResponse(
        _events(entry, completion, chunks(completion, job)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _events(entry: dict, completion: Completion, chunks: AsyncIterator[dict]):
    try:
        async for chunk in chunks:
            yield _sse(chunk)
    except APIError as e:  # mid-stream: the status line is gone, so say it in an event
        entry.update(status=e.status, error=e.message)
        yield _sse(e.body())
    except asyncio.CancelledError:
        entry.update(status=499, error="the client went away")
        raise
    finally:
        entry["completion_tokens"] = completion.completion_tokens
        await chunks.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


def _sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"
