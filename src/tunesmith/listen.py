"""The listening socket of our servers (`serve`, `ui`), bound before they serve so that the URL
they print has the real port (port 0 picks a free one)."""

from __future__ import annotations

import socket

from tunesmith.errors import UsageError


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (IPv6 when the host has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; "
            "pick another --port (0 picks a free one)"
        ) from None
    sock.listen(128)
    return sock
