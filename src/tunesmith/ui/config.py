"""`UIConfig`: where the dashboard listens, which workspace it shows, and who may use it."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import UsageError
from tunesmith.options import option

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class UIConfig:
    host: str = option(
        "127.0.0.1",
        "address to bind; any other address needs --api-key, else a token is printed in the URL",
    )
    port: int = option(8080, "port (0 = any free port)")
    workspace: str | None = option(
        None,
        "workspace folder holding runs/ (default: $TUNESMITH_HOME or the current directory)",
        metavar="DIR",
    )
    api_key: str | None = option(
        None,
        "require this key: `Authorization: Bearer KEY`, or open the page once with ?token=KEY",
        metavar="KEY",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be between 0 and 65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("the API key cannot be empty; leave out --api-key or give a key")

    @property
    def loopback(self) -> bool:
        """Only this machine can connect (the one case where no key is needed)."""
        return self.host in LOOPBACK
