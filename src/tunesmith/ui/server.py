"""Serving the dashboard with uvicorn until Ctrl-C."""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Callable

import uvicorn

from tunesmith.listen import listen_socket
from tunesmith.runs import open_workspace
from tunesmith.ui.app import create_app
from tunesmith.ui.config import UIConfig


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, inheritable so that uvicorn's workers can take it over."""
    sock = listen_socket(host, port)
    sock.set_inheritable(True)
    return sock


def url_of(config: UIConfig, port: int, token: str | None) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


def serve_ui(config: UIConfig, announce: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard for `config.workspace` until Ctrl-C or SIGTERM.

    Off loopback and without an API key, a random token is required, and shown in the URL."""
    workspace = open_workspace(config.workspace)  # checks the folder, reaps dead runs
    token = config.api_key
    if token is None and not config.loopback:
        token = secrets.token_urlsafe(24)
    app = create_app(workspace.root, token=token)
    sock = bind(config.host, config.port)
    url = url_of(config, sock.getsockname()[1], token if config.api_key is None else None)
    (announce or _print)(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _print(url: str) -> None:
    print(f"tunesmith ui at {url} (Ctrl-C stops)", flush=True)
    if "token=" in url:
        print("open that URL: the token in it is needed to use the dashboard", file=sys.stderr)
