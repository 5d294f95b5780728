"""A real local Ray cluster for the cluster tests: `ray start --head --block` on 127.0.0.1 with
free ports, its own temp dir, logical resources (1 GPU, 4 CPUs: placement is testable without
a GPU); stopped by PID, with every process it started, never by a bare `ray stop`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT_FLAGS = (
    "--port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalRayCluster:
    def __init__(self, gpus: int = 1, cpus: int = 4):
        self.root = Path(tempfile.mkdtemp(prefix="tsray-"))  # short: Ray's socket paths
        self.cache = self.root / "cache"
        ports = free_ports(len(PORT_FLAGS) + 24)
        flags = [f"{flag}={port}" for flag, port in zip(PORT_FLAGS, ports, strict=False)]
        workers = ",".join(map(str, ports[len(PORT_FLAGS) :]))
        self.address = f"127.0.0.1:{ports[0]}"
        ray = Path(sys.executable).with_name("ray")
        cmd = [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
        cmd += [f"--temp-dir={self.root / 't'}", f"--num-gpus={gpus}", f"--num-cpus={cpus}"]
        cmd += ["--include-dashboard=false", "--disable-usage-stats", "--worker-port-list", workers]
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TUNESMITH_CLUSTER")}
        env.update(TUNESMITH_CLUSTER_CACHE=str(self.cache), HF_HUB_OFFLINE="1")
        env["HOME"] = str(self.root / "home")  # the workers' own hub cache and ~/.cache
        self.log = open(self.root / "ray-start.log", "wb")
        self.proc = subprocess.Popen(
            cmd + flags, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        import ray

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "ray-start.log").read_text()[-3000:])
            if "Ray runtime started" in (self.root / "ray-start.log").read_text():
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("ray start --head did not come up in time")
        ray.init(address=self.address, namespace="tunesmith", logging_level="WARNING")

    def stop(self) -> None:
        import ray

        ray.shutdown()
        family = descendants(self.proc.pid)  # workers run in process groups of their own
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        for pid in family + descendants_of_any(family):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _parents() -> dict[int, int]:
    """pid → parent pid, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            found[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return found


def descendants(pid: int) -> list[int]:
    return descendants_of_any([pid])


def descendants_of_any(pids: list[int]) -> list[int]:
    parents = _parents()
    found, frontier = [], list(pids)
    while frontier:
        children = [c for c, p in parents.items() if p in frontier and c not in found]
        found += children
        frontier = children
    return found


def wait_for(condition, timeout: float = 120.0, interval: float = 0.3, what: str = "condition"):
    """Poll until `condition()` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def tunesmith(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (its own Ray connection)."""
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_tunesmith(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
