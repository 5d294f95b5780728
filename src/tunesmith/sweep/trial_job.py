"""A cluster sweep's trial as Ray Tune runs it, on the node Tune placed it (see `tune.py`)."""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tunesmith.cluster.connect import NAMESPACE
from tunesmith.cluster.worker import RemoteJob
from tunesmith.sweep.trials import parse_progress


def trainable(config: dict[str, Any], jobs: dict[int, str], metric: str, poll: float) -> None:
    """One trial, where Ray Tune placed it: start its job's actor here, then report each
    evaluation the job records until the job ends (the driver starts and follows the job)."""
    name = jobs[config["trial"]]
    gpus = [str(g) for g in ray.get_gpu_ids()]  # held by this trial; the job gets exactly them
    node = ray.get_runtime_context().get_node_id()
    actor = (
        ray.remote(RemoteJob)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",  # the driver copies its outputs after Tune has ended the trial
            max_restarts=0,
            num_cpus=0,
            num_gpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        .remote(name, gpus)
    )
    offset = 0
    while True:
        reply = ray.get(actor.metrics.remote(offset))
        offset += len(reply["metrics"])
        lines = reply["metrics"].decode("utf-8", errors="replace").splitlines()
        for step, value in parse_progress(lines, metric)[0]:
            if step > 0:  # step 0 is the untrained model, as for the local ASHA
                tune.report({metric: value, "step": step})
        if reply["done"]:
            return
        time.sleep(poll)
