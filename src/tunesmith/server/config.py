"""`ServerConfig`: where the server listens and the limits each request and connection is held
to. Each field is also its `tunesmith serve` flag (tunesmith.options)."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import UsageError
from tunesmith.options import option, require_finite


@dataclass
class ServerConfig:
    host: str = option("127.0.0.1", "address to bind")
    port: int = option(8000, "port (0 picks a free one)")
    api_key: str | None = option(
        None,
        "require `Authorization: Bearer KEY` on every request (the key is never recorded "
        "with the run)",
        default_help="$TUNESMITH_API_KEY",
    )
    allow_origin: tuple[str, ...] = option(
        (),
        "let web pages from ORIGIN call the server (CORS); repeat it for more, * for any",
        repeat=True,
        metavar="ORIGIN",
    )
    max_batch_size: int = option(16, "sequences decoded together")
    batch_wait: float = option(
        0.01, "seconds an idle model waits for requests sent together", cli=False
    )
    continuous: bool = option(
        True,
        "--no-continuous: decode static batches (a request waits for the running batch to "
        "finish) instead of letting requests join a running batch between decode steps",
    )
    timeout: float = option(120.0, "seconds per request, from arrival to its last token")
    max_body_bytes: int = option(1 << 20, "request size limit in bytes")
    max_n: int = option(16, "most completions per prompt (n)")
    max_choices: int = option(64, "most completions per request (prompts x n)")
    max_connections: int = option(256, "most open connections; more are answered 503 and closed")
    header_timeout: float = option(10.0, "seconds a client may take to send a request's headers")
    keep_alive: float = option(5.0, "seconds an idle keep-alive connection stays open")

    def __post_init__(self) -> None:
        require_finite(self)
        self.allow_origin = tuple(self.allow_origin)
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("the API key cannot be empty")
        for name in ("max_batch_size", "max_body_bytes", "max_n", "max_choices", "max_connections"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        for name in ("timeout", "header_timeout", "keep_alive"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name.replace('_', '-')} must be more than 0 seconds")
        if not self.batch_wait >= 0:
            raise UsageError("the batch wait must be >= 0")
