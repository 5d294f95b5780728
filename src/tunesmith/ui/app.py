"""The dashboard's HTTP side: a FastAPI app serving the page, its assets and a JSON API.

Routes answer from a fresh `Workspace` each time (requests run on many threads; SQLite
connections stay on theirs). Everything a run recorded goes out as JSON, and the page builds
its DOM with textContent, so a run's text is never parsed as HTML.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from tunesmith.errors import RunError, TunesmithError
from tunesmith.generate import GenerationConfig
from tunesmith.runs import Workspace
from tunesmith.ui import actions, readmodel, records
from tunesmith.ui.playground import Playground
from tunesmith.ui.security import Guard

STATIC = Path(__file__).parent / "static"
INLINE_TYPES = (".png", ".jpg", ".jpeg", ".gif")  # shown in the page; the rest are attachments
MAX_COMPARE = 8


def create_app(workspace: str | Path, token: str | None = None) -> FastAPI:
    """The dashboard for the workspace at `workspace`; with `token`, every request needs it."""
    app = FastAPI(title="tunesmith ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.root = Workspace(workspace).root
    app.state.playground = Playground(Workspace(app.state.root))
    app.add_middleware(Guard, token=token)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(TunesmithError, _tunesmith_error)
    app.include_router(router)
    return app


async def _tunesmith_error(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status", None)
    if status is None:
        status = 404 if str(exc).startswith("there is no run") else 409
        if not isinstance(exc, RunError):
            status = 400
    return JSONResponse({"error": str(exc)}, status_code=status)


def _workspace(request: Request) -> Iterator[Workspace]:
    workspace = Workspace(request.app.state.root)
    try:
        yield workspace
    finally:
        workspace.close()


def _existing(workspace: Workspace, run_id: int) -> None:
    if workspace.get(run_id) is None:
        raise RunError(f"there is no run {run_id} in {workspace.root}")


router = APIRouter()
WS = Depends(_workspace)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


@router.get("/api/runs")
def runs(
    workspace: Workspace = WS,
    kind: str | None = None,
    status: str | None = None,
    q: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    workspace.reap_stale()  # a run whose process died shows as failed, not running forever
    flt = readmodel.RunFilter(kind or None, status or None, q or None)
    return readmodel.runs_page(workspace, flt, limit, offset)


@router.get("/api/runs/{run_id}")
def run(run_id: int, workspace: Workspace = WS) -> dict[str, Any]:
    meta = workspace.describe(run_id)
    started = workspace.get(run_id).started  # epoch seconds, for the browser's own clock
    return {**meta, "started_at": started, **records.run_extras(workspace, run_id)}


@router.get("/api/runs/{run_id}/log")
def log(run_id: int, offset: int = Query(0, ge=0), workspace: Workspace = WS) -> dict:
    _existing(workspace, run_id)
    return readmodel.log_chunk(workspace, run_id, offset)


@router.get("/api/runs/{run_id}/metrics")
def metrics(run_id: int, offset: int = Query(0, ge=0), workspace: Workspace = WS) -> dict:
    _existing(workspace, run_id)
    return readmodel.metrics_chunk(workspace, run_id, offset)


@router.get("/api/runs/{run_id}/download")
def download(run_id: int, path: str, workspace: Workspace = WS) -> FileResponse:
    _existing(workspace, run_id)
    target = records.file_in_run(workspace, run_id, path)
    inline = target.suffix.lower() in INLINE_TYPES
    return FileResponse(
        target,
        filename=target.name,
        content_disposition_type="inline" if inline else "attachment",
        headers={"content-security-policy": "default-src 'none'; sandbox"},
    )


@router.post("/api/runs/{run_id}/stop")
def stop(run_id: int, workspace: Workspace = WS) -> dict:
    actions.stop_run(workspace, run_id)
    return {"stopping": run_id}


@router.post("/api/runs/{run_id}/delete")
def delete(run_id: int, workspace: Workspace = WS) -> dict:
    actions.delete_run(workspace, run_id)
    return {"deleted": run_id}


@router.get("/api/compare")
def compare(ids: str, workspace: Workspace = WS) -> dict:
    return _compare(workspace, ids)


@router.get("/api/playground/stream")
def stream(
    request: Request,
    source: str,
    prompt: str = "",
    length: int = Query(60, ge=1, le=1024),
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.9,
    seed: int | None = None,
    samples: int = Query(1, ge=1, le=8),
) -> StreamingResponse:
    def events() -> Iterator[dict[str, Any]]:
        # Errors come as an event: a browser's EventSource cannot read an error's body.
        config = GenerationConfig(length, temperature, top_k, top_p, seed=seed)
        yield from request.app.state.playground.stream(source.strip(), prompt, config, samples)

    return StreamingResponse(
        _sse(events()), media_type="text/event-stream", headers={"cache-control": "no-store"}
    )


def _compare(workspace: Workspace, ids_text: str) -> dict[str, Any]:
    try:
        ids = list(dict.fromkeys(int(i) for i in ids_text.split(",") if i.strip()))
    except ValueError as e:
        raise RunError(f"ids must be run numbers separated by commas, got {ids_text!r}") from e
    if not 2 <= len(ids) <= MAX_COMPARE:
        raise RunError(f"pick between 2 and {MAX_COMPARE} runs to compare")
    runs = []
    for run_id in ids:
        run = workspace.get(run_id)
        if run is None:
            raise RunError(f"there is no run {run_id} in {workspace.root}")
        series = readmodel.metrics_chunk(workspace, run_id, 0)["records"]
        runs.append({"id": run_id, "kind": run.kind, "params": run.params, "metrics": series})
    keys = sorted({k for r in runs for k in r["params"]})
    missing = object()
    differing = [
        k
        for k in keys
        if len({json.dumps(r["params"].get(k, missing), default=str) for r in runs}) > 1
    ]
    return {"runs": runs, "differing": differing}


async def _sse(events: Iterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-sent events from a blocking iterator, one step at a time on a worker thread; the
    iterator is closed however the stream ends (a closed tab releases the model)."""
    done = object()
    try:
        while True:
            try:
                event = await run_in_threadpool(next, events, done)
            except TunesmithError as e:
                yield f"data: {json.dumps({'error': str(e)})}\n\n"
                return
            if event is done:
                return
            yield f"data: {json.dumps(event)}\n\n"
    finally:
        await run_in_threadpool(events.close)
