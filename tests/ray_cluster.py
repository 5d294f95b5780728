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
        import psutil
        import ray

        ray.shutdown()
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        except psutil.NoSuchProcess:
            family = []
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for p in family:  # workers and their commands run in process groups of their own
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
