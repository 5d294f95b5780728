"""`finetune --cluster ... --nodes N`: DDP over N Ray Train workers (`TorchTrainer`).

The job's actor runs `python -m tunesmith.cluster.nodes SPEC` as its command. This driver starts
a TorchTrainer whose N workers (one per node where the cluster has them; gloo on CPU, NCCL on
GPU) each run `tunesmith finetune ...` with the environment torchrun gives (MASTER_ADDR/PORT,
RANK, WORLD_SIZE, LOCAL_RANK), so training is the existing DDP code path and equals one process
with the same global batch. Rank 0 records the run in the job's workspace, which must be on the
job's node (Ray Train puts rank 0 beside its driver). Ray Train's own process group (gloo) only
passes rank 0's address to the others.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

from tunesmith.cluster.config import ADDRESS_VARIABLES


def train_worker(spec: dict[str, Any]) -> None:
    """One Ray Train worker: `tunesmith ARGV` as one rank of the DDP group, in a process of its
    own with the variables torchrun would give it (rank 0's address shared over Ray Train's
    process group)."""
    import ray.train
    import torch.distributed as dist

    context = ray.train.get_context()
    rendezvous = [None]
    if context.get_world_rank() == 0:
        rendezvous = [(ray.util.get_node_ip_address(), _free_port())]
    dist.broadcast_object_list(rendezvous, src=0)
    address, port = rendezvous[0]
    env = {k: v for k, v in os.environ.items() if k not in ADDRESS_VARIABLES}
    env.update(
        TUNESMITH_HOME=spec["workspace"],
        MASTER_ADDR=address,
        MASTER_PORT=str(port),
        RANK=str(context.get_world_rank()),
        WORLD_SIZE=str(context.get_world_size()),
        LOCAL_RANK=str(context.get_local_rank()),
        LOCAL_WORLD_SIZE=str(context.get_local_world_size()),
        PYTHONUNBUFFERED="1",
    )
    argv = [sys.executable, "-m", "tunesmith", *spec["argv"]]
    code = subprocess.call(argv, cwd=spec["workspace"], env=env)
    if code:
        raise RuntimeError(f"tunesmith {spec['argv'][0]} exited with code {code}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def run(spec: dict[str, Any]) -> int:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # the workers' lines go into a log file
    ray.init(address=spec["address"], namespace=spec["namespace"], log_to_driver=True)
    gpus = spec["resources"].get("GPU", 0)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=spec,
        scaling_config=ScalingConfig(
            num_workers=spec["nodes"],
            use_gpu=gpus > 0,
            resources_per_worker=spec["resources"],
            placement_strategy="SPREAD",  # one per node where there are enough
        ),
        torch_config=TorchConfig(backend="gloo"),  # the ranks pick NCCL themselves on GPUs
        run_config=RunConfig(
            name=spec["name"], storage_path=tempfile.mkdtemp(prefix="tunesmith-train-")
        ),
    )
    try:
        trainer.fit()
    except Exception as e:  # Ray Train wraps the worker's error: one line of it is enough
        print(f"error: {str(e).strip().splitlines()[-1]}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(json.loads(sys.argv[1])))
