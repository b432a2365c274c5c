"""Process-group setup from torchrun's environment, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistEnv:
        """torchrun (and the operator's Indexed Job) set RANK, WORLD_SIZE, LOCAL_RANK, ..."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )


def resolve_device(requested: str, env: DistEnv) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was requested but CUDA is not available in this pod")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def setup(env: DistEnv, device: torch.device) -> None:
    """Join the process group (MASTER_ADDR/MASTER_PORT from env); NCCL on GPU, gloo on CPU."""
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            rank=env.rank,
            world_size=env.world_size,
            device_id=device if device.type == "cuda" else None,
        )
    if device.type == "cpu" and env.local_world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Processes on one host share its cores; oversubscribing them slows everyone down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.local_world_size))


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
