"""Collectives the trainers need beyond accelerate: an OR over processes and a gradient average.

Both are no-ops in a single process (or when torch.distributed is not initialised), so a trainer reads the same on
one CPU and under ``accelerate launch``. The GRPO trainers do not wrap their models in DDP (a process may run a
different number of forwards per step), so they average gradients themselves before the optimiser step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["any_process", "average_gradients", "world_size"]


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
