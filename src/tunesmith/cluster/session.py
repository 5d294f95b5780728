"""Following a remote run from this machine: copy its output into the run's log (and onto the
terminal), its metrics into metrics.jsonl, its finished folders (checkpoints) as they appear;
at the end copy its outputs back and record the run here as it ended there."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tunesmith.cluster.connect import NAMESPACE, ClusterError, connect
from tunesmith.cluster.names import map_json_file, map_value
from tunesmith.cluster.state import RemoteState, locked
from tunesmith.cluster.transfer import fetch_file, fetch_folder
from tunesmith.runs.display import format_duration
from tunesmith.runs.outputs import RECORDS_DIR, scan_outputs
from tunesmith.runs.workspace import Workspace, remove_tree

PULL_EVERY = 1.0  # seconds between looks for finished folders while the job runs
# JSON records naming the job's inputs, renamed back on arrival: tunesmith.train.config's
# CONFIG_FILE (spelled out: importing tunesmith.train loads torch, seconds before any output).
RECORDED_FILES = ("finetune_config.json",)


class Remote:
    """One remote run of a workspace, and the job's actor that runs it."""

    def __init__(self, ws: Workspace, run_id: int):
        self.ws = ws
        self.run_id = run_id
        run = ws.get(run_id)
        self.cluster: dict[str, Any] = dict(run.info.get("cluster") or {})
        if not self.cluster.get("job"):
            raise ClusterError(f"run {run_id} did not run on a cluster")
        self.records = ws.records_dir(run_id)
        self.ray = connect(self.cluster["address"])
        self._last_listing: dict[str, tuple[int, int]] = {}
        try:
            self.actor = self.ray.get_actor(self.cluster["job"], namespace=NAMESPACE)
        except ValueError:
            self.actor = None  # the job is gone: the cluster restarted, or it was cleaned up

    def step(self, echo: bool) -> bool:
        """Copy what is new (under the run's lock); True once the job has ended."""
        with locked(self.records):
            state = RemoteState.load(self.records)
            reply = self.ray.get(self.actor.poll.remote(state.index, state.metrics_offset))
            self._write_output(reply["chunks"], echo)
            if reply["metrics"]:
                with open(self.records / "metrics.jsonl", "ab") as f:
                    f.write(reply["metrics"])
            state.index = reply["index"]
            state.metrics_offset += len(reply["metrics"])
            state.save(self.records)
        return reply["done"]

    def _write_output(self, chunks: list[tuple[str, str]], echo: bool) -> None:
        if not chunks:
            return
        with open(self.records / "log.txt", "a", encoding="utf-8", newline="") as log:
            log.write("".join(text for _, text in chunks))
        if echo:
            for stream, text in chunks:
                out = sys.stdout if stream == "stdout" else sys.stderr
                out.write(text)
                out.flush()

    def pull_finished(self, settle: float | None = None) -> None:
        """Copy files and folders that have not changed since the last look (a checkpoint is
        written aside and renamed into place, so once it is listed it is complete); with
        `settle`, look twice that many seconds apart first."""
        if settle is not None:
            self._last_listing = _signatures(self.ray.get(self.actor.listing.remote()))
            time.sleep(settle)
        listing = self.ray.get(self.actor.listing.remote())
        now = _signatures(listing)
        stable = {p for p, sig in now.items() if self._last_listing.get(p) == sig}
        self._last_listing = now
        units: dict[str, list[dict[str, Any]]] = {}
        for f in listing:  # a top-level file alone, else its folder as a whole
            units.setdefault(f["path"].rsplit("/", 1)[0], []).append(f)
        run_dir = self.ws.run_dir(self.run_id)
        with locked(self.records):
            state = RemoteState.load(self.records)
            for unit, files in sorted(units.items()):
                signature = repr(sorted((f["path"], now[f["path"]]) for f in files))
                if state.pulled.get(unit) == signature or any(
                    f["path"] not in stable for f in files
                ):
                    continue
                try:
                    state.bytes_fetched += self._pull(unit, files, run_dir)
                except (ClusterError, OSError):
                    continue  # changed while copied: next look
                state.pulled[unit] = signature
            for unit in [u for u in state.pulled if u not in units]:  # removed there
                target = run_dir / unit
                remove_tree(target) if target.is_dir() else target.unlink(missing_ok=True)
                del state.pulled[unit]
            state.save(self.records)

    def _pull(self, unit: str, files: list[dict[str, Any]], run_dir: Path) -> int:
        if files[0]["path"] != unit:
            return fetch_folder(self.ray, self.actor, files, unit, run_dir)
        sha = self.ray.get(self.actor.digest.remote(unit))
        if sha is None:
            return 0
        fetched = fetch_file(self.ray, self.actor, unit, files[0]["size"], sha, run_dir / unit)
        if Path(unit).name in RECORDED_FILES:
            map_json_file(run_dir / unit, self.cluster.get("names", {}))
        return fetched

    def follow(self, echo: bool = True, interval: float = 0.5) -> dict[str, Any] | None:
        """Copy output until the job ends; returns its result."""
        last_pull = time.monotonic()
        while not self.step(echo):
            if time.monotonic() - last_pull >= PULL_EVERY:
                self.pull_finished()
                last_pull = time.monotonic()
            time.sleep(interval)
        return self.ray.get(self.actor.result.remote())

    def stop(self) -> None:
        self.ray.get(self.actor.stop.remote(float(self.cluster.get("kill_after", 10.0))))

    def finish(
        self, result: dict[str, Any] | None, reason: str | None = None, echo: bool = True
    ) -> int:
        """Copy the outputs back and record the run's end here; returns its exit code. Without
        a result (the job died) the run fails with `reason`, keeping what was pulled."""
        with locked(self.records):
            run = self.ws.get(self.run_id)
            if run.status != "running":  # another process finished it meanwhile
                return run.exit_code or 0
            run_dir = self.ws.run_dir(self.run_id)
            names = self.cluster.get("names", {})
            fields = _fields_from(result, reason, names)
            if result is not None:
                self._fetch_outputs(result["outputs"], run_dir)
                if fields["status"] == "failed":
                    fields["error"] += f"; its output ended: {_tail(result.get('output_tail', ''))}"
            for path in run_dir.rglob("*"):
                if path.name in RECORDED_FILES and path.is_file():
                    map_json_file(path, names)
            info = dict(run.info)
            if result is not None and result.get("device"):
                info["device"] = result["device"]
            # The log's last lines first: a reader following it stops once the run has ended.
            self._log_end(fields, time.time() - run.started, echo)
            self.ws.finish(
                self.run_id,
                scan_outputs(run_dir, info.get("excluded", [])),
                ended=time.time(),
                duration=time.time() - run.started,
                info=info,
                **fields,
            )
            self.ws.write_meta(self.run_id)
        if self.actor is not None and result is not None:
            self.ray.get(self.actor.clean_up.remote())
            self.ray.kill(self.actor)
        return fields["exit_code"]

    def _log_end(self, fields: dict[str, Any], duration: float, echo: bool) -> None:
        took = format_duration(duration)
        status, code = fields["status"], fields["exit_code"]
        ending = {"succeeded": f"succeeded in {took}", "interrupted": f"interrupted after {took}"}
        text = f"run {self.run_id} " + ending.get(status, f"failed (exit code {code}) after {took}")
        error = f"error: {fields['error']}\n" if fields["error"] else ""
        with open(self.records / "log.txt", "a", encoding="utf-8") as f:
            f.write(error + text + "\n")
        if echo:
            print(text, file=sys.stderr, flush=True)

    def _fetch_outputs(self, outputs: list[dict[str, Any]], run_dir: Path) -> None:
        state = RemoteState.load(self.records)
        wanted = {o["path"] for o in outputs}
        for o in outputs:
            dest = run_dir / o["path"]
            state.bytes_fetched += fetch_file(
                self.ray, self.actor, o["path"], o["size"], o["sha256"], dest
            )
        for existing in scan_outputs(run_dir):  # pulled while running, since removed there
            if existing.path not in wanted:
                (run_dir / existing.path).unlink()
        for folder in sorted(run_dir.rglob("*"), key=lambda p: -len(p.parts)):
            if folder.is_dir() and folder.name != RECORDS_DIR and not any(folder.iterdir()):
                folder.rmdir()  # left empty by the removals above
        state.save(self.records)


def _signatures(listing: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {f["path"]: (f["size"], f["mtime_ns"]) for f in listing}


def _fields_from(result: dict[str, Any] | None, reason: str | None, names: dict[str, str]) -> dict:
    if result is None:
        return {"status": "failed", "exit_code": 1, "error": reason or "the job was lost"}
    status = result.get("status", "failed")
    code = result.get("exit_code") or 0
    if status == "running":  # killed before it could record its end
        status, code = "failed", code or 1
    error = result.get("error")
    if status == "failed" and not error:
        error = f"command exited with code {code}"
    return {
        "status": status,
        "exit_code": 0 if status == "succeeded" else (code or 1),
        "error": error,
        "summary": _rename_paths(result.get("summary"), names),
        "main_output": result.get("main_output") or ".",
        "metrics": result.get("metrics") or {},
        "params": map_value(result.get("params") or {}, names),
    }


def _rename_paths(text: str | None, names: dict[str, str]) -> str | None:
    """Worker paths inside a line of text (a summary) renamed to ours."""
    for theirs, ours in names.items():
        if text and theirs.startswith("/"):
            text = text.replace(theirs, ours)
    return text


def _tail(text: str, lines: int = 3, limit: int = 300) -> str:
    """The last lines of the job's output, on one line (for the run's error)."""
    last = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    joined = " | ".join(last[-lines:]) or "(no output)"
    return joined if len(joined) <= limit else "…" + joined[-limit:]
