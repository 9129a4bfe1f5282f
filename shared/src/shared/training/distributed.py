"""Collectives the trainers need beyond accelerate (an OR over processes, a gradient average) and a local process
group for tests.

Both are no-ops in a single process (or when torch.distributed is not initialised), so a trainer reads the same on
one CPU and under ``accelerate launch``. The GRPO trainers do not wrap their models in DDP (a process may run a
different number of forwards per step), so they average gradients themselves before the optimiser step.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["any_process", "average_gradients", "run_local_group", "world_size"]


def world_size() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def any_process(flag: bool, device: torch.device | str = "cpu") -> bool:
    """OR of ``flag`` over all processes."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """p.grad ← mean over processes (a missing gradient counts as zeros)."""
    n = world_size()
    if n == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(n)


def run_local_group(worker: Callable[..., None], world: int, *args: Any, timeout_s: float = 60.0) -> None:
    """Run ``worker(rank, world, *args)`` in ``world`` forked CPU processes that share one gloo process group.

    Each process gets the variables a launcher sets (MASTER_ADDR/PORT on a free local port, RANK, LOCAL_RANK,
    WORLD_SIZE), one torch thread and an initialised group, destroyed after the worker returns. For tests of
    multi-process code without ``accelerate launch``; fork, so ``worker`` may be a function of a test module (pytest's
    importlib mode makes those unimportable by name). Raises when a process fails.
    """
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_local_entry, args=(world, port, timeout_s, worker, args), nprocs=world, join=True,
                       start_method="fork")


def _local_entry(rank: int, world: int, port: int, timeout_s: float, worker: Callable[..., None],
                 args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=timeout_s))
    try:
        worker(rank, world, *args)
    finally:
        torch.distributed.destroy_process_group()
