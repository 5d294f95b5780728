"""The remote side of a run: one detached Ray actor per run, living on the node that runs it.

The actor builds a fresh workspace for the job, imports the runs it uses (their outputs taken
from the node's blob store) under new numbers, then runs `python -m tunesmith ...` there in its
own process group, exactly as it would run locally. It keeps the command's output and reads the
job's metrics file so that a client can fetch both by offset, and lists the job's files (with
sha256) so that a client can copy them back. Being detached, it outlives the client.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunesmith.cluster.names import map_json_file
from tunesmith.cluster.store import BlobStore, cache_root, safe_relative
from tunesmith.jobs.process import _die_with_parent
from tunesmith.runs.outputs import RECORDS_DIR, scan_outputs, sha256_file
from tunesmith.runs.workspace import Workspace, remove_tree

# Variables that would send the job back to a cluster, or tie it to the client's run.
_DROPPED_ENV = ("RAY_ADDRESS", "TUNESMITH_CLUSTER", "TUNESMITH_RUN_ID", "TUNESMITH_HOME")
# The job's own "run K" / "run K succeeded ..." lines: the client prints its own.
_OWN_RUN_LINES = re.compile(r"(?m)^run \d+( (succeeded|failed|interrupted)\b.*)?\n")
_OWN_RUN_START = re.compile(r"^(r|ru|run|run \d*|run \d+ [^\n]*)$")


class RemoteJob:
    """A run executing on this node (see the module docstring). Created by the client with
    `ray.remote(RemoteJob).options(name=..., lifetime="detached", num_cpus=..., ...)`."""

    def __init__(self, job_id: str, gpus: list[str] | None = None):
        # `gpus`: the devices the job may use when the actor holds none itself (a sweep's trial
        # holds them in Ray Tune's trainable beside it); None means the actor's own.
        self.gpus = gpus
        root = cache_root()
        self.store = BlobStore(root / "blobs")
        self.folder = root / "jobs" / job_id
        self.workspace = Workspace(self.folder / "workspace")
        self.output: list[tuple[str, str]] = []  # (stream, text), in the order printed
        self.run_id: int | None = None
        self.exit_code: int | None = None
        self.started = False
        self.stopped = False
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # -- inputs --------------------------------------------------------------------------

    def where(self) -> dict[str, Any]:
        """The node and devices this run got."""
        import ray

        gpus = self.gpus if self.gpus is not None else [str(g) for g in ray.get_gpu_ids()]
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node": socket.gethostname(),
            "node_ip": ray.util.get_node_ip_address(),
            "device": f"cuda:{','.join(gpus)}" if gpus else "cpu",
            "pid": os.getpid(),
            "workspace": str(self.workspace.root),
        }

    def missing(self, shas: list[str]) -> list[str]:
        return self.store.missing(shas)

    def put_blob(self, sha: str, data: bytes, offset: int, last: bool) -> None:
        self.store.put(sha, data, offset, last)

    def import_run(self, record: dict[str, Any]) -> int:
        """Recreate a client's run (its outputs, status and main output) in the job's
        workspace; returns its number here."""
        run = self.workspace.create_run(record["kind"], ["(imported)"], {}, {})
        folder = self.workspace.run_dir(run.id)
        for f in record["files"]:
            self.store.copy_out(f["sha256"], folder / safe_relative(f["path"]))
        outputs = scan_outputs(folder)
        self.workspace.finish(
            run.id,
            outputs,
            status=record["status"],
            ended=time.time(),
            main_output=record["main_output"],
            info={"imported_from": record["id"]},
        )
        return run.id

    def rename_inputs(self, run_id: int, name: str, renames: dict[str, str]) -> None:
        """Name inputs in an imported run's saved config as they are called here, and seal
        its outputs again (the job checks an input run's files against their seal)."""
        folder = self.workspace.run_dir(run_id)
        map_json_file(folder / safe_relative(name), renames)
        status = self.workspace.get(run_id).status
        self.workspace.finish(run_id, scan_outputs(folder), status=status)

    def place_files(self, dest: str, files: list[dict[str, Any]]) -> str:
        """Copy a client's file or folder into the job; returns its absolute path here."""
        target = self.folder / "inputs" / safe_relative(dest)
        for f in files:
            path = target / safe_relative(f["path"]) if f["path"] != "." else target
            self.store.copy_out(f["sha256"], path)
        return str(target)

    # -- the command ---------------------------------------------------------------------

    def start(
        self, argv: list[str], env: dict[str, str], nodes: int = 1, resources: dict | None = None
    ) -> int:
        """Run `tunesmith ARGV` in the job's workspace (over `nodes` Ray Train workers, each
        holding `resources`, when more than one); returns the job's run number there."""
        if self.started:
            return self.run_id
        self.workspace.runs_dir.mkdir(parents=True, exist_ok=True)
        envs = cache_root() / "envs"  # --pip environments, built once per node
        envs.mkdir(parents=True, exist_ok=True)
        (self.workspace.root / RECORDS_DIR).mkdir(exist_ok=True)
        link = self.workspace.root / RECORDS_DIR / "envs"
        if not link.exists():
            link.symlink_to(envs, target_is_directory=True)
        latest = self.workspace.latest()
        self.run_id = (latest.id if latest else 0) + 1
        full_env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        full_env.update(env, TUNESMITH_HOME=str(self.workspace.root), PYTHONUNBUFFERED="1")
        if self.gpus is not None:  # exactly the GPUs held for it, which Ray did not set here
            full_env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        argv = [sys.executable, "-m", "tunesmith", *argv]
        if nodes > 1:
            argv = [
                sys.executable,
                "-m",
                "tunesmith.cluster.nodes",
                self._spec(argv[3:], nodes, resources),
            ]
        ready = threading.Event()
        threading.Thread(target=self._supervise, args=(argv, full_env, ready), daemon=True).start()
        ready.wait()
        self.started = True
        return self.run_id

    def _spec(self, argv: list[str], nodes: int, resources: dict | None) -> str:
        import ray

        context = ray.get_runtime_context()
        spec = {
            "argv": argv,
            "workspace": str(self.workspace.root),
            "address": context.gcs_address,
            "namespace": context.namespace,
            "nodes": nodes,
            "resources": resources or {"CPU": 1},
            "name": self.folder.name,
        }
        return json.dumps(spec)

    def _supervise(self, argv: list[str], env: dict[str, str], ready: threading.Event) -> None:
        # Started from this thread, which lives as long as the command: the command gets
        # SIGTERM when the actor's process dies (PDEATHSIG follows the creating thread).
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workspace.root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as e:
            self.output.append(("stderr", f"error: cannot start tunesmith on the worker: {e}\n"))
            self.exit_code = 127
            ready.set()
            return
        ready.set()
        pumps = [
            threading.Thread(target=self._pump, args=(self._proc.stdout, "stdout")),
            threading.Thread(target=self._pump, args=(self._proc.stderr, "stderr")),
        ]
        for t in pumps:
            t.start()
        code = self._proc.wait()
        for t in pumps:
            t.join(timeout=10)
        self.exit_code = code if code >= 0 else 128 - code

    def _pump(self, pipe, stream: str) -> None:
        fd = pipe.fileno()
        pending = ""
        while True:
            chunk = os.read(fd, 65536)
            text = pending + chunk.decode("utf-8", errors="replace")
            # Hold back an unfinished line that may be the job's own "run K ..." line.
            cut = text.rfind("\n") + 1
            tail = text[cut:]
            held = chunk and _OWN_RUN_START.match(tail) and len(tail) < 200
            pending = tail if held else ""
            text = _OWN_RUN_LINES.sub("", text[:cut] if held else text)
            if text:
                with self._lock:
                    self.output.append((stream, text))
            if not chunk:
                break
        pipe.close()

    def stop(self, kill_after: float = 10.0) -> None:
        """SIGTERM the command's process group (the job records itself as interrupted), then
        SIGKILL whatever is left after `kill_after` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.stopped = True
        _signal_group(proc.pid, signal.SIGTERM)

        def kill_later() -> None:
            time.sleep(kill_after)
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)

        threading.Thread(target=kill_later, daemon=True).start()

    # -- what the client reads -----------------------------------------------------------

    def poll(self, index: int, metrics_offset: int) -> dict[str, Any]:
        """Output chunks from `index`, complete metrics lines from byte `metrics_offset`, and
        whether the command had ended before they were read (its output is then complete)."""
        done = self.exit_code is not None
        with self._lock:
            chunks = self.output[index:]
        reply = self.metrics(metrics_offset)
        return {"chunks": chunks, "index": index + len(chunks), **reply, "done": done}

    def metrics(self, offset: int) -> dict[str, Any]:
        """Complete metrics.jsonl lines from byte `offset`, and whether the command has ended
        (looked at first: once it says so, the lines read after are the last ones)."""
        done = self.exit_code is not None
        metrics = b""
        path = self._records() / "metrics.jsonl" if self.run_id else None
        if path is not None and path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            metrics = data[: data.rfind(b"\n") + 1]
        return {"metrics": metrics, "done": done}

    def listing(self) -> list[dict[str, Any]]:
        """The job's complete files (no hidden temporary folders), with size and mtime."""
        if self.run_id is None:
            return []
        root = self.workspace.run_dir(self.run_id)
        run = self.workspace.get(self.run_id)
        excluded = tuple(run.info.get("excluded", [])) if run else ()  # mounted inputs
        found = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                path = Path(folder) / name
                rel = path.relative_to(root).as_posix()
                if any(rel == e or rel.startswith(e + "/") for e in excluded):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                found.append({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return found

    def digest(self, path: str) -> str | None:
        target = self.workspace.run_dir(self.run_id) / safe_relative(path)
        try:
            return sha256_file(target)
        except OSError:
            return None

    def read(self, path: str, offset: int, size: int) -> bytes:
        target = self.workspace.run_dir(self.run_id) / safe_relative(path)
        with open(target, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def result(self) -> dict[str, Any] | None:
        """The job's run as recorded here, once it has ended; None while it runs."""
        if self.exit_code is None:
            return None
        meta = self.workspace.describe(self.run_id) if self.workspace.get(self.run_id) else {}
        if meta.get("status", "running") == "running":  # ended before it could record its end
            meta["status"] = "interrupted" if self.stopped else "failed"
        meta["exit_code"] = (
            meta.get("exit_code") if meta.get("exit_code") is not None else self.exit_code
        )
        meta["outputs"] = [o.to_dict() for o in self.workspace.outputs(self.run_id)]
        with self._lock:
            meta["output_tail"] = "".join(text for _, text in self.output[-50:])[-4000:]
        return meta

    def clean_up(self) -> None:
        """Remove the job's folder once the client has everything."""
        self.workspace.close()
        remove_tree(self.folder)

    def _records(self) -> Path:
        return self.workspace.records_dir(self.run_id)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
