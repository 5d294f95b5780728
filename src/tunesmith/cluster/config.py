"""`ClusterConfig`: where a command runs (`--cluster`) and what it asks the cluster for.

The flags come from the fields (tunesmith.options), so `run`, `finetune`, `generate` and `data`
offer the same cluster options with one default and one help text each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tunesmith.errors import UsageError
from tunesmith.options import option

ADDRESS_VARIABLES = ("TUNESMITH_CLUSTER", "RAY_ADDRESS")
LOCAL = "local"  # `--cluster local` runs here even when TUNESMITH_CLUSTER is set


@dataclass(frozen=True)
class ClusterConfig:
    """Where to run and with which resources; `address` None means on this machine."""

    cluster: str | None = option(
        None,
        "run on this Ray cluster (HOST:PORT or ray://HOST:PORT; `local` runs here)",
        metavar="ADDRESS",
        default_help="$TUNESMITH_CLUSTER, then $RAY_ADDRESS, else this machine",
    )
    gpus: float = option(0.0, "GPUs the remote run needs", metavar="N")
    cpus: float = option(1.0, "CPUs the remote run needs", metavar="N")
    memory: float | None = option(None, "memory the remote run needs, in GB", metavar="GB")
    nodes: int = option(1, "finetune: spread DDP over N nodes (Ray Train)", metavar="N")
    detach: bool = option(False, "return once the cluster accepted the run")

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpus < 0:
            raise UsageError("--gpus and --cpus cannot be negative")
        if self.memory is not None and self.memory <= 0:
            raise UsageError("--memory must be a positive number of GB")
        if self.nodes < 1:
            raise UsageError("--nodes must be at least 1")

    @property
    def address(self) -> str | None:
        """The cluster to use: the flag, then the environment; None for this machine."""
        value = self.cluster
        if value is None:
            value = next((os.environ[v] for v in ADDRESS_VARIABLES if os.environ.get(v)), None)
        if value is None or value.strip() in ("", LOCAL):
            return None
        return value.strip()

    def resources(self) -> dict[str, float]:
        """The request as Ray resource names (memory in bytes, as Ray counts it)."""
        request = {"CPU": self.cpus, "GPU": self.gpus}
        if self.memory is not None:
            request["memory"] = self.memory * 1e9
        return {k: v for k, v in request.items() if v}
