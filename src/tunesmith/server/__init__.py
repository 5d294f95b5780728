"""An OpenAI-compatible server for any model or run, on FastAPI + uvicorn.

    serve("runs/3", ServerConfig(port=8000))        # until Ctrl-C

engine.py decodes a continuous batch on the model, batcher.py runs it on one worker thread,
completions.py and chat.py turn requests into sequences and events into OpenAI's answers,
schemas.py and protocol.py are the wire format, app.py the routes, server.py uvicorn.

Names other than ServerConfig are imported on first use, so that the CLI, which builds the
serve flags from ServerConfig, starts without loading torch and the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tunesmith.server.config import ServerConfig

if TYPE_CHECKING:  # for editors and type checkers: the names __getattr__ serves
    from tunesmith.server.chat import ChatTemplate
    from tunesmith.server.protocol import APIError
    from tunesmith.server.requestlog import RequestLog
    from tunesmith.server.schemas import ChatCompletionRequest, CompletionRequest
    from tunesmith.server.server import CompletionServer, serve

_EXPORTS = {
    "APIError": "tunesmith.server.protocol",
    "ChatCompletionRequest": "tunesmith.server.schemas",
    "ChatTemplate": "tunesmith.server.chat",
    "CompletionRequest": "tunesmith.server.schemas",
    "CompletionServer": "tunesmith.server.server",
    "RequestLog": "tunesmith.server.requestlog",
    "serve": "tunesmith.server.server",
}

__all__ = [
    "APIError",
    "ChatCompletionRequest",
    "ChatTemplate",
    "CompletionRequest",
    "CompletionServer",
    "RequestLog",
    "ServerConfig",
    "serve",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tunesmith.server' has no attribute {name!r}")
