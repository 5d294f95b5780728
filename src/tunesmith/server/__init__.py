"""An OpenAI-compatible completion server for any model or run.

    serve("runs/3", ServerConfig(port=8000))        # until Ctrl-C

protocol.py parses requests and shapes answers, batcher.py runs the model on one thread and
batches what waits, completions.py joins the two, server.py is the HTTP side.
"""

from __future__ import annotations

from collections.abc import Callable

from tunesmith.generate import TextGenerator
from tunesmith.runs.references import resolve_reference
from tunesmith.server.protocol import APIError, CompletionRequest, parse_completion_request
from tunesmith.server.requestlog import RequestLog
from tunesmith.server.server import CompletionServer, ServerConfig

__all__ = [
    "APIError",
    "CompletionRequest",
    "CompletionServer",
    "RequestLog",
    "ServerConfig",
    "parse_completion_request",
    "serve",
]


def serve(
    model: str | TextGenerator,
    config: ServerConfig | None = None,
    model_name: str | None = None,
    log: RequestLog | None = None,
    on_ready: Callable[[CompletionServer], None] | None = None,
) -> dict[str, int]:
    """Serve `model` (a hub id, folder, run path or loaded generator) until Ctrl-C or SIGTERM
    (a KeyboardInterrupt in the main thread), then shut down cleanly and return the totals
    of the request log. A Ctrl-C is the normal way to stop a server, so it is not re-raised."""
    generator = model
    if not isinstance(model, TextGenerator):
        generator = TextGenerator.load(str(resolve_reference(model)))  # runs/N: its model
        generator.source = str(model)  # clients see the name they were given
    server = CompletionServer(generator, config, model_name, log)
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
