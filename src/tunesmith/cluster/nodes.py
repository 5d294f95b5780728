"""`finetune --cluster ... --nodes N`: DDP over N Ray Train workers (`TorchTrainer`).

The job's actor runs `python -m tunesmith.cluster.nodes SPEC` as its command. This driver starts
a TorchTrainer whose N workers (one per node where the cluster has them; gloo on CPU, NCCL on
GPU) each run `tunesmith finetune ...` in-process, in the process group Ray Train set up: the
same environment torchrun gives (RANK, WORLD_SIZE, LOCAL_RANK), so training is the existing DDP
code path and equals one process with the same global batch. Rank 0 records the run in the
job's workspace, which must be on the job's node (Ray Train puts rank 0 beside its driver).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from tunesmith.cluster.config import ADDRESS_VARIABLES


def train_worker(spec: dict[str, Any]) -> None:
    """One Ray Train worker: `tunesmith ARGV` as a rank of the DDP group."""
    from tunesmith.cli import main

    for name in ADDRESS_VARIABLES:  # this rank runs here; it must not send itself on again
        os.environ.pop(name, None)
    os.environ["TUNESMITH_HOME"] = spec["workspace"]
    os.chdir(spec["workspace"])
    code = main(spec["argv"])
    if code:
        raise RuntimeError(f"tunesmith {' '.join(spec['argv'][:1])} exited with code {code}")


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
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
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
