"""Training on several processes: launch through torchrun, then DistributedDataParallel.

`tunesmith finetune --nproc N ...` re-runs itself under `torch.distributed.run` with the same
arguments; each process sees RANK / WORLD_SIZE / LOCAL_RANK and joins the group (gloo on CPU,
NCCL on CUDA). Only rank 0 records the run and writes its files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Options of the launching command that the processes it starts must not see again.
LAUNCH_OPTIONS = {
    "--nproc": 1,
    "--nnodes": 1,
    "--node-rank": 1,
    "--master-addr": 1,
    "--master-port": 1,
}


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_launched_process() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def strip_launch_options(argv: list[str]) -> list[str]:
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_OPTIONS:
            skip = 0 if "=" in arg else LAUNCH_OPTIONS[name]
            continue
        out.append(arg)
    return out


def launch(
    argv: list[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
) -> int:
    """Run `tunesmith <argv>` in nproc processes per node under torchrun; its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and master_addr is None:
        cmd.append("--standalone")
    else:
        cmd += [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            f"--master-addr={master_addr or '127.0.0.1'}",
            f"--master-port={master_port or 29500}",
        ]
    cmd += ["-m", "tunesmith", *strip_launch_options(argv)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.call(cmd, env=env)


def init(device_type: str) -> Dist:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if not in_launched_process() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend)
    info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, info: Dist, device: torch.device) -> torch.nn.Module:
    if info.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
