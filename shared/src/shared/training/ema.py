"""Exponential moving average of parameters, for evaluation with averaged weights.

Every ``update_every``-th call of :meth:`EMA.update` performs, for each parameter p with shadow s,

    s ← d·s + (1 − d)·p,      d = decay                                  (warmup=False)
                              d = min(decay, (1 + k) / (10 + k))         (warmup=True, k = EMA updates so far, from 0)

so the shadow starts at the parameters' values when the EMA is built. Flow-GRPO's baseline is decay 0.9 every 8
optimiser steps; DanceGRPO uses 0.995 (see shared_core.md §8). Shadows of floating-point parameters are kept in
float32 (a bf16 shadow would round away (1 − d)·p updates) and cast back by :meth:`EMA.copy_to`.

Evaluation swap::

    with ema.average_parameters():      # store() → copy_to() → ... → restore()
        images = sample(model)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["EMA"]


class EMA:
    """EMA of a fixed list of tensors (typically ``[p for p in model.parameters() if p.requires_grad]``).

    Args:
        parameters: the tensors to track; the same objects are written by :meth:`copy_to`.
        decay: d in [0, 1).
        update_every: average only on every n-th :meth:`update` call (counts calls, not optimiser steps).
        warmup: use d_k = min(decay, (1 + k)/(10 + k)) so early averages are not dominated by the initial weights.
    """

    def __init__(self, parameters: Iterable[torch.Tensor], decay: float = 0.999, update_every: int = 1, *,
                 warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        if not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"EMA update_every must be an int >= 1, got {update_every!r}")
        self.params = list(parameters)
        self.decay = float(decay)
        self.update_every = update_every
        self.warmup = warmup
        self.num_calls = 0  # update() calls
        self.num_updates = 0  # averages actually applied
        self.shadow = [self._init_shadow(p) for p in self.params]
        self._stored: list[torch.Tensor] | None = None

    @staticmethod
    def _init_shadow(p: torch.Tensor) -> torch.Tensor:
        p = p.detach()
        return p.to(torch.float32, copy=True) if p.is_floating_point() else p.clone()

    def current_decay(self) -> float:
        """The decay the next applied average will use."""
        if self.warmup:
            k = self.num_updates
            return min(self.decay, (1 + k) / (10 + k))
        return self.decay

    @torch.no_grad()
    def update(self) -> bool:
        """Count one call; on every ``update_every``-th call average the parameters in. Returns whether it averaged."""
        self.num_calls += 1
        if self.num_calls % self.update_every:
            return False
        d = self.current_decay()
        for s, p in zip(self.shadow, self.params, strict=True):
            if s.is_floating_point():
                s.mul_(d).add_(p.detach().to(s.dtype), alpha=1.0 - d)
            else:
                s.copy_(p.detach())
        self.num_updates += 1
        return True

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.Tensor] | None = None) -> None:
        """Write the averaged values into ``parameters`` (default: the tracked ones)."""
        targets = self.params if parameters is None else list(parameters)
        if len(targets) != len(self.shadow):
            raise ValueError(f"copy_to got {len(targets)} tensors, the EMA tracks {len(self.shadow)}")
        for s, p in zip(self.shadow, targets, strict=True):
            p.copy_(s.to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def store(self) -> None:
        """Save a copy of the current (training) parameter values for :meth:`restore`."""
        self._stored = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the values saved by :meth:`store`."""
        if self._stored is None:
            raise RuntimeError("EMA.restore() called without a preceding store()")
        for saved, p in zip(self._stored, self.params, strict=True):
            p.copy_(saved)
        self._stored = None

    @contextlib.contextmanager
    def average_parameters(self) -> Iterator[None]:
        """Context manager: the tracked parameters hold the EMA values inside, the training values after."""
        self.store()
        self.copy_to()
        try:
            yield
        finally:
            self.restore()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "update_every": self.update_every, "warmup": self.warmup,
                "num_calls": self.num_calls, "num_updates": self.num_updates,
                "shadow": [s.detach().clone() for s in self.shadow]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(f"EMA state has {len(shadow)} tensors, this EMA tracks {len(self.shadow)}")
        for mine, theirs in zip(self.shadow, shadow, strict=True):
            if mine.shape != theirs.shape:
                raise ValueError(f"EMA state shape {tuple(theirs.shape)} != tracked shape {tuple(mine.shape)}")
            mine.copy_(theirs)
        self.decay = float(state["decay"])
        self.update_every = int(state["update_every"])
        self.warmup = bool(state.get("warmup", False))
        self.num_calls = int(state["num_calls"])
        self.num_updates = int(state["num_updates"])
