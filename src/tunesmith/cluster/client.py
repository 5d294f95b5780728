"""Remote runs, as the CLI uses them: submit (attached or detached), follow, sync and stop.

An attached client streams the job's output like a local run; Ctrl-C (or SIGTERM) stops the
remote job and waits for it to record itself. A run whose client went away keeps running on the
cluster; `follow` or `sync` from any later process picks it up again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tunesmith.cluster.config import ClusterConfig
from tunesmith.cluster.connect import ClusterError, require_ray
from tunesmith.cluster.launch import create_run, log_line, record_job, start_job
from tunesmith.cluster.session import Remote
from tunesmith.errors import TunesmithError
from tunesmith.runs.outputs import scan_outputs
from tunesmith.runs.record import sigterm_as_interrupt
from tunesmith.runs.workspace import Workspace, open_workspace

STOP_GRACE = 30.0  # seconds to wait, after stopping a job, for it to record its end


def submit(
    kind: str,
    argv: list[str],
    config: ClusterConfig,
    workspace: str | Path | None = None,
    kill_after: float = 10.0,
) -> int:
    """Run `tunesmith ARGV` (argv[0] is the subcommand) on the cluster as a new local run of
    `kind`; returns its exit code (0 at once with `config.detach`)."""
    require_ray()  # without Ray: one line saying how to get it, and no run recorded
    ws = open_workspace(workspace)
    run_id = create_run(ws, kind, ["tunesmith", *argv], config.address)
    log_line(ws, run_id, f"run {run_id}")
    cluster = None
    try:
        with sigterm_as_interrupt():
            cluster = start_job(ws, run_id, argv, config, kill_after)
            record_job(ws, run_id, cluster)
            if config.detach:
                print(f"run {run_id} submitted; follow it with `tunesmith logs {run_id} --follow`")
                return 0
            return follow(ws, run_id)
    except BaseException as e:
        if cluster is None:  # the job never started (start_job removes what it began)
            fail_here(ws, run_id, e)
        elif isinstance(e, KeyboardInterrupt) and ws.get(run_id).status == "running":
            _stop_before_following(ws, run_id, cluster)
        raise


def _stop_before_following(ws: Workspace, run_id: int, cluster: dict) -> None:
    """Ctrl-C (or SIGTERM) that landed after the job started but before `follow` took charge
    of it: stop the job and record its end, as `follow` does."""
    if not ws.get(run_id).info.get("cluster", {}).get("job"):
        record_job(ws, run_id, cluster, echo=False)
    print(f"stopping run {run_id} on the cluster…", file=sys.stderr, flush=True)
    stop(ws, run_id)


def fail_here(ws: Workspace, run_id: int, error: BaseException) -> None:
    """Record a run as failed (or interrupted) here, with what it holds: its job never
    started, or its cluster is gone."""
    interrupted = isinstance(error, KeyboardInterrupt)
    message = str(error) or type(error).__name__
    if not isinstance(error, (TunesmithError, KeyboardInterrupt)):
        message = f"the cluster refused the job: {message.strip().splitlines()[0]}"
    run = ws.get(run_id)
    ws.finish(
        run_id,
        scan_outputs(ws.run_dir(run_id)),
        status="interrupted" if interrupted else "failed",
        exit_code=getattr(error, "exit_code", 130 if interrupted else 1),
        error=message,
        ended=time.time(),
        duration=time.time() - run.started,
    )
    ws.write_meta(run_id)
    log_line(ws, run_id, f"error: {message}", echo=False)
    if not isinstance(error, (TunesmithError, KeyboardInterrupt)):
        raise ClusterError(message) from None


def follow(ws: Workspace, run_id: int, echo: bool = True) -> int:
    """Stay attached to a remote run until it ends, then record it; its exit code."""
    remote = Remote(ws, run_id)
    if remote.actor is None:
        return remote.finish(None, "the cluster no longer has this run's job", echo=echo)
    ray = remote.ray
    try:
        with sigterm_as_interrupt():
            result = remote.follow(echo)
    except KeyboardInterrupt:
        print(f"stopping run {run_id} on the cluster…", file=sys.stderr, flush=True)
        remote.stop()
        result = _wait_for_end(remote, echo)
        remote.finish(result, "stopped; the job did not record its end in time", echo=echo)
        raise
    except ray.exceptions.RayActorError as e:
        return remote.finish(None, actor_death(e), echo=echo)
    except ray.exceptions.RayError as e:  # the cluster, not the job, is in trouble
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(
            f"lost contact with the cluster ({first}); run {run_id} may still be running "
            f"there: `tunesmith runs sync {run_id}` later, or `tunesmith runs stop {run_id}`"
        ) from None
    return remote.finish(result, echo=echo)


def _wait_for_end(remote: Remote, echo: bool) -> dict | None:
    deadline = time.monotonic() + STOP_GRACE
    try:
        while time.monotonic() < deadline:
            if remote.step(echo):
                return remote.ray.get(remote.actor.result.remote())
            time.sleep(0.2)
    except remote.ray.exceptions.RayActorError:
        return None
    return None


def actor_death(error: BaseException) -> str:
    """Ray's reason in one line (its messages run over several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "killed" in line or "died" in line.lower()), None)
    return "the job's worker died on the cluster" + (f": {reason}" if reason else "")


def sync(ws: Workspace, run_id: int) -> str:
    """Copy what a remote run has produced so far; record it here once it has ended. Returns
    the run's status here."""
    remote = Remote(ws, run_id)
    if ws.get(run_id).status != "running":
        return ws.get(run_id).status
    if remote.actor is None:
        remote.finish(None, "the cluster no longer has this run's job", echo=False)
        return ws.get(run_id).status
    try:
        if remote.step(echo=False):
            remote.finish(remote.ray.get(remote.actor.result.remote()), echo=False)
        else:
            remote.pull_finished(settle=1.0)
    except remote.ray.exceptions.RayActorError as e:
        remote.finish(None, actor_death(e), echo=False)
    return ws.get(run_id).status


def stop(ws: Workspace, run_id: int) -> int:
    """Stop a remote run and wait for it to record its end here; its exit code. With its
    cluster unreachable, the run is marked failed here (the job cannot be told)."""
    try:
        remote = Remote(ws, run_id)
    except ClusterError as e:
        fail_here(ws, run_id, ClusterError(f"stopped here; {e}"))
        return 1
    if remote.actor is None:
        return remote.finish(None, "the cluster no longer has this run's job", echo=False)
    try:
        remote.stop()
        result = _wait_for_end(remote, echo=False)
    except remote.ray.exceptions.RayActorError as e:
        return remote.finish(None, actor_death(e), echo=False)
    return remote.finish(result, "stopped; the job did not record its end in time", echo=False)
