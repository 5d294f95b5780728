"""Reaching a Ray cluster: import Ray (an optional extra), check the address answers, connect,
and check that some node could ever satisfy a resource request."""

from __future__ import annotations

import importlib.util
import logging
import socket
import types

from tunesmith.errors import TunesmithError, UsageError

NAMESPACE = "tunesmith"
CONNECT_TIMEOUT = 5.0  # seconds for the address to answer; ray.init itself may wait far longer
INSTALL_HINT = "pip install 'tunesmith[cluster]'"


class ClusterError(TunesmithError):
    """The cluster cannot be reached, cannot run the request, or lost the run."""


def require_ray() -> None:
    """A one-line error saying how to install Ray when it is missing (without importing it:
    that takes seconds)."""
    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"--cluster needs Ray, which is not installed: {INSTALL_HINT}")


def import_ray() -> types.ModuleType:
    """Ray, or a one-line error saying how to install it."""
    require_ray()
    import ray

    return ray


def _host_port(address: str) -> tuple[str, int]:
    text = address.removeprefix("ray://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--cluster {address}: expected HOST:PORT, e.g. 127.0.0.1:6379")
    return host.strip("[]") or "127.0.0.1", int(port)


def probe(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail at once when nothing listens at the cluster's address (ray.init would retry for
    a minute or more before giving up)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it with "
            "`ray start --head` or check --cluster / $TUNESMITH_CLUSTER"
        ) from None


def connect(address: str) -> types.ModuleType:
    """Connect this process to the cluster (once); returns the ray module."""
    probe(address)
    ray = import_ray()
    if ray.is_initialized():  # one cluster per process: Ray's rule
        connected = ray.get_runtime_context().gcs_address
        if connected.rpartition(":")[2] != str(_host_port(address)[1]):
            raise ClusterError(f"this process is already connected to the cluster at {connected}")
        return ray
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            logging_level=logging.WARNING,
            log_to_driver=False,  # the run's output comes back through the job, once
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    return ray


def _describe(resources: dict[str, float]) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    memory = resources.get("memory", 0) / 1e9
    return f"{cpus:g} CPU, {gpus:g} GPU, {memory:.1f} GB"


def check_feasible(ray: types.ModuleType, request: dict[str, float], nodes: int = 1) -> None:
    """Fail now, listing what each node offers, when no node (or fewer than `nodes`) could
    ever hold `request`: Ray would otherwise queue the run forever."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if sum(_how_many(n["Resources"], request) for n in alive) >= nodes:
        return
    wanted = ", ".join(
        f"{v / 1e9:.1f} GB" if k == "memory" else f"{v:g} {k}" for k, v in request.items()
    )
    offers = "; ".join(
        f"{n.get('NodeManagerAddress', '?')}: {_describe(n['Resources'])}" for n in alive
    )
    where = "any node" if nodes == 1 else f"each of {nodes} workers"
    raise ClusterError(
        f"no cluster node can run this: it asks for {wanted or 'nothing'} on {where}, "
        f"and the nodes offer {offers or 'nothing (no live nodes)'}"
    )


def _how_many(offer: dict[str, float], request: dict[str, float]) -> int:
    """How many copies of `request` one node could hold at once."""
    counts = [int(offer.get(k, 0) // v) for k, v in request.items() if v > 0]
    return min(counts) if counts else 1
