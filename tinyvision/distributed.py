"""Multi-process training under torchrun (DistributedDataParallel).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `tinyvision train` then joins the process group
(gloo on CPU, nccl on CUDA), each rank trains on its shard of every epoch's permutation with
batch_size / world_size samples per step (so the global batch is the config's), and only rank 0
writes the run directory. On CUDA every process needs a GPU of its own (NCCL cannot share one
between ranks); the process group is left at exit (teardown).
"""
from __future__ import annotations

import atexit
import inspect
import os
from pathlib import Path
from datetime import timedelta
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine (torchrun's --nproc-per-node)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def context() -> Context:
    """The torchrun environment (single process when WORLD_SIZE is absent or 1)."""
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1)))
    return Context(int(os.environ.get("RANK", "0")), world, local_rank, local_world)


def restarted() -> bool:
    """True in a worker that torchrun restarted after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def relaunched(run_dir: str | Path) -> bool:
    """Under torchrun, whether `run_dir` holds an unfinished run with a checkpoint to continue:
    torchrun restarted the workers, or the whole job was launched again after a failure."""
    from .rundir import inspect_run

    return context().enabled and inspect_run(run_dir).resumable


# device_id binds the NCCL communicator to the rank's GPU at once (no guessing at the first
# collective); a torch without the argument gets the old lazy binding
_HAS_DEVICE_ID = "device_id" in inspect.signature(dist.init_process_group).parameters


def setup(ctx: Context, device: torch.device) -> torch.device:
    """Join the process group once; on CUDA each rank takes the GPU of its local rank."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = rank_gpu(ctx)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # A failed connection should fail the worker (torchrun then restarts it), not hang it:
        # gloo's connect after a restart can stall, so collectives time out after this long.
        timeout = timedelta(seconds=float(os.environ.get("TINYVISION_DIST_TIMEOUT", "300")))
        extra = {"device_id": device} if device.type == "cuda" and _HAS_DEVICE_ID else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout, **extra)
        atexit.register(teardown)  # also for Python callers; the CLI calls teardown itself
    return device


def rank_gpu(ctx: Context) -> torch.device:
    """cuda:LOCAL_RANK, once it is known that every process on this machine has a GPU of its own.
    Every rank checks the same counts, so all of them refuse at once (none waits for the others)."""
    visible = torch.cuda.device_count()
    needed = max(ctx.local_world_size, ctx.local_rank + 1)
    if needed > visible:
        fewer = f" or --nproc-per-node {visible}" if visible else ""
        raise ConfigError(f"config field 'device': {needed} processes on this machine but {visible} visible "
                          f"CUDA GPU(s), and NCCL needs one GPU per process: use device=cpu (gloo){fewer}")
    return torch.device("cuda", ctx.local_rank)


def teardown() -> None:
    """Leave the process group if this process joined one (a no-op otherwise, and when called
    again): NCCL warns, and may leak its communicators, when a process exits still in the group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, ctx: Context) -> int:
    if global_batch % ctx.world_size:
        raise ConfigError(f"config field 'batch_size': {global_batch} does not split evenly over "
                          f"{ctx.world_size} processes")
    return global_batch // ctx.world_size


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # no buffer sync inside forward: evaluation on every rank needs no collective
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def all_reduce_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()
