"""Data-parallel training under ``torchrun``: gloo on CPU, NCCL on GPU, one process per rank.

``torchrun --nproc_per_node=2 -m cnnlab train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; each
process then trains on its share of every global batch (the loader's ``rank``/``world_size``)
and DistributedDataParallel averages the gradients, so all ranks hold the same weights.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "BACKENDS",
    "DistContext",
    "all_reduce_sum",
    "broadcast_buffers",
    "check_backend",
    "check_ranks_agree",
    "env_world_size",
    "init_from_env",
    "shutdown",
]

BACKENDS = ("auto", "gloo", "nccl")
# What init_process_group's env:// method reads; torchrun (and the Slurm script in
# docs/distributed.md) sets all of them. LOCAL_RANK is optional (it defaults to RANK).
REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MARKERS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # any of these means "distributed was meant"
_GROUPS = itertools.count()  # the process groups this process has joined


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """The number of processes the environment describes (1: none); a one-line ValueError
    when the distributed variables are half set or not numbers, before anything waits on a
    rendezvous that cannot happen."""
    env = os.environ
    if not any(name in env for name in MARKERS):
        return 1
    missing = [name for name in REQUIRED_ENV if not env.get(name)]
    if missing and env.get("WORLD_SIZE", "").strip() != "1":
        given = ", ".join(f"{n}={env[n]}" for n in (*REQUIRED_ENV, "LOCAL_RANK") if n in env)
        raise ValueError(
            f"distributed environment half set ({given}) but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing; start the run with torchrun "
            "(docs/distributed.md), or unset RANK, WORLD_SIZE and LOCAL_RANK to train in one "
            "process")
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = env.get(name, "0" if name != "WORLD_SIZE" else "1")
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not an integer") from None
    world_size, rank = values["WORLD_SIZE"], values["RANK"]
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world_size}: need 0 <= RANK < WORLD_SIZE")
    return world_size


def check_backend(backend: str, device: torch.device) -> str:
    """The process-group backend: NCCL for CUDA, gloo for CPU (auto), or the one asked for
    if it can run here."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and (device.type != "cuda" or not dist.is_nccl_available()):
        why = ("no CUDA GPU is available here" if not torch.cuda.is_available() else
               f"training runs on {device}" if device.type != "cuda" else
               "this PyTorch build has no NCCL")
        raise ValueError(f"--backend nccl needs CUDA GPUs, but {why}; use --backend gloo "
                         "(CPU) or auto")
    return backend


def init_from_env(device: torch.device, backend: str = "auto") -> DistContext:
    """Join the process group that torchrun describes in the environment (or run alone)."""
    backend = check_backend(backend, device)
    world_size = env_world_size()
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size))
        # torchrun's agent store outlives a restart of the workers, and with it the keys the
        # dead group's ranks published (their addresses): a restarted group reading those
        # would connect to dead processes. Each attempt keeps its keys apart.
        # (The count keeps apart the groups one process joins one after the other, too.)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        prefix = f"cnnlab/{attempt}/{next(_GROUPS)}"
        dist.init_process_group(backend=backend, store=dist.PrefixStore(prefix, store),
                                rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        # A DistributedDataParallel wrapper that outlives the group would destroy it when it
        # is freed, holding the GIL while gloo's worker thread waits for it: a deadlock at
        # exit. Free those no longer reachable now, while the group still exists.
        gc.collect()
        dist.destroy_process_group()


def check_ranks_agree(ctx: DistContext, parts: dict[str, Any]) -> None:
    """Every rank must train the same model on the same data with the same recipe; a rank
    started with another ``--set`` (or another node's files) would otherwise train something
    else in silence, or hang in a collective. Compared once, at start-up: each rank hashes
    each part, the hashes are gathered, and every rank raises the same one-line ValueError
    naming the parts that differ."""
    if not ctx.enabled:
        return
    mine = {name: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()
                                 ).hexdigest() for name, value in parts.items()}
    everyone: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    differ = [name for name in mine if len({hashes.get(name) for hashes in everyone}) > 1]
    if differ:
        odd = [rank for rank, hashes in enumerate(everyone) if hashes != everyone[0]]
        raise ValueError(
            f"the ranks disagree on {', '.join(differ)}: rank{'s' * (len(odd) > 1)} "
            f"{', '.join(map(str, odd))} differ{'s' * (len(odd) == 1)} from rank 0; every rank "
            "must run the same command on the same data (compare each node's command line, "
            "--set values and dataset files)")
