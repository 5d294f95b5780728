"""Submitting a command to the cluster as a new local run: record the run, connect, check the
request can ever be met, start the job's actor, send the inputs the node lacks, start the job."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tunesmith.cluster import inputs as job_inputs
from tunesmith.cluster.config import ClusterConfig
from tunesmith.cluster.connect import NAMESPACE, check_feasible, connect
from tunesmith.cluster.inputs import RESUMED_CONFIG, fill
from tunesmith.cluster.transfer import upload_missing
from tunesmith.cluster.worker import RemoteJob
from tunesmith.runs import environment
from tunesmith.runs.workspace import Workspace


def job_options(config: ClusterConfig, name: str) -> dict[str, Any]:
    """The actor's options: detached (it outlives this process), holding the request."""
    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "max_restarts": 0,
        "num_cpus": config.cpus,
        "num_gpus": config.gpus,
    }
    if config.nodes > 1:  # the Ray Train workers hold the request; the job only watches
        options.update(num_cpus=0, num_gpus=0)
    elif config.memory is not None:
        options["memory"] = int(config.memory * 1e9)
    return options


def create_run(
    ws: Workspace,
    kind: str,
    argv: list[str],
    address: str,
    name: str | None = None,
    parent: int | None = None,
) -> int:
    """The local record of a remote run; `info.cluster` marks it as running elsewhere, so the
    dead-process check leaves it alone. `parent`: the run it is part of (a sweep)."""
    info = {k: v for k, v in environment.collect().items() if k != "host"}
    info["cluster"] = {"address": address}
    if parent is not None:
        info["parent"] = parent
    run = ws.create_run(kind, argv, {"argv": argv[1:]}, info, name=name)
    ws.write_meta(run.id)
    return run.id


def log_line(ws: Workspace, run_id: int, text: str, echo: bool = True) -> None:
    """A line of tunesmith's own, in the run's log and on the terminal."""
    with open(ws.records_dir(run_id) / "log.txt", "a", encoding="utf-8") as f:
        f.write(text + "\n")
    if echo:
        print(text, file=sys.stderr, flush=True)


def record_job(ws: Workspace, run_id: int, cluster: dict[str, Any], echo: bool = True) -> None:
    """Record where run `run_id`'s job started (`info.cluster`, which `Remote` follows)."""
    ws.update(run_id, info=dict(ws.get(run_id).info, cluster=cluster))
    ws.write_meta(run_id)
    where = f"{cluster['node']} ({cluster['device']}) on {cluster['address']}"
    log_line(ws, run_id, f"running on {where}", echo=echo)


def job_name() -> str:
    """A new job's actor name, unique on any cluster."""
    return f"tunesmith-{uuid.uuid4().hex[:12]}"


def start_job(
    ws: Workspace, run_id: int, argv: list[str], config: ClusterConfig, kill_after: float
) -> dict[str, Any]:
    """Start the job for run `run_id` (argv: `[subcommand, ...]`); returns what the run's
    `info.cluster` records about it."""
    ray = connect(config.address)
    check_feasible(ray, config.resources(), config.nodes)
    found = collect_inputs(ws, run_id, argv)
    name = job_name()
    actor = ray.remote(RemoteJob).options(**job_options(config, name)).remote(name)
    try:
        return start_in(ray, actor, name, ws, found, config, kill_after)
    except BaseException:
        ray.kill(actor)  # detached: it would otherwise hold its resources for good
        raise


def collect_inputs(ws: Workspace, run_id: int, argv: list[str]) -> job_inputs.Inputs:
    """The inputs `argv` names, recorded as used by run `run_id`."""
    found = job_inputs.collect(ws, argv)
    for used_id, ref in found.uses:
        ws.add_use(run_id, used_id, ref)
    return found


def start_in(
    ray: Any,
    actor: Any,
    name: str,
    ws: Workspace,
    found: job_inputs.Inputs,
    config: ClusterConfig,
    kill_after: float,
) -> dict[str, Any]:
    """Send the job's actor `name` the inputs its node lacks and start the command; returns
    what the run's `info.cluster` records about it. The caller kills the actor on failure."""
    started = time.monotonic()
    where = ray.get(actor.where.remote())
    sent = upload_missing(ray, actor, found.shas())
    numbers = [ray.get(actor.import_run.remote(r)) for r in found.runs]
    places = [ray.get(actor.place_files.remote(p["dest"], p["files"])) for p in found.paths]
    command = found.command(numbers, places)
    for number, record in zip(numbers, found.runs, strict=True):
        if record.get("renames"):
            renames = {k: fill(v, numbers, places) for k, v in record["renames"].items()}
            ray.get(actor.rename_inputs.remote(number, RESUMED_CONFIG, renames))
    ray.get(actor.start.remote(command, {}, config.nodes, config.resources()))
    names = {f"runs/{n}": f"runs/{r['id']}" for n, r in zip(numbers, found.runs, strict=True)}
    names.update({place: p["local"] for place, p in zip(places, found.paths, strict=True)})
    for n, r in zip(numbers, found.runs, strict=True):
        names[str(Path(where["workspace"]) / "runs" / str(n))] = str(ws.run_dir(r["id"]))
    return {
        "address": config.address,
        "job": name,
        **{k: where[k] for k in ("node", "node_ip", "node_id", "device")},
        "resources": config.resources(),
        "names": names,
        "kill_after": kill_after,
        "bytes_sent": sent,
        "submit_s": round(time.monotonic() - started, 3),
    }
