"""An OpenAI-compatible server for any model or run, on FastAPI + uvicorn.

    serve("runs/3", ServerConfig(port=8000))        # until Ctrl-C

engine.py decodes a continuous batch on the model, batcher.py runs it on one worker thread,
completions.py and chat.py turn requests into sequences and events into OpenAI's answers,
schemas.py and protocol.py are the wire format, app.py the routes, server.py uvicorn.
"""

from __future__ import annotations

from collections.abc import Callable

from tunesmith.generate import TextGenerator
from tunesmith.server.chat import ChatTemplate
from tunesmith.server.config import ServerConfig
from tunesmith.server.protocol import APIError
from tunesmith.server.requestlog import RequestLog
from tunesmith.server.schemas import ChatCompletionRequest, CompletionRequest
from tunesmith.server.server import CompletionServer

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
        from tunesmith.checkpoint import resolve_model_dir

        generator = TextGenerator.load(model)
        chat_template = chat_template or ChatTemplate.from_folder(resolve_model_dir(model))
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
