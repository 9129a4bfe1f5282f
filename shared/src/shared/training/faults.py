"""Faults do not lose a run: drop non-finite rewards, skip non-finite steps, stop after too many in a row.

* A NaN/inf **reward** drops that sample (:func:`sanitize_rewards`, or :meth:`FaultGuard.check_rewards`, which also
  counts it). A batch whose rewards are *all* non-finite is a faulty step.
* A NaN/inf **loss** or **gradient** skips that optimiser step: :meth:`FaultGuard.step` zeroes the gradients and does
  not call ``optimizer.step()`` (nor ``scheduler.step()``), so the parameters and the LR schedule are unchanged.
* More than ``max_consecutive`` faulty steps in a row call ``on_abort()`` (write a checkpoint there) and raise
  :class:`~shared.errors.TooManyFaultsError` with what happened, how often, and what to try.

Order inside a trainer (works with gradient accumulation and DDP/FSDP; the skip decision is all-reduced so every
process skips the same steps)::

    kept = guard.check_rewards(rewards)            # drop NaN/inf samples: index every per-sample tensor by kept.keep
    if not kept.keep.any():
        continue                                   # already counted as a skipped step
    ...
    with accelerator.accumulate(model):
        loss = compute_loss(...)
        guard.check_loss(loss)                     # remembers a non-finite loss until the step
        accelerator.backward(loss)                 # call backward anyway: all ranks must take part
        if accelerator.sync_gradients:
            stepped = guard.step(optimizer, model.parameters(), max_grad_norm=cfg.max_grad_norm,
                                 clip_grad_norm=accelerator.clip_grad_norm_, scheduler=scheduler)
    logger.log({**metrics, **guard.metrics()}, step)

With fp16 loss scaling (accelerate's ``GradScaler``) an overflowing step is routed through ``optimizer.step()`` so the
scaler lowers its scale (it skips the update itself); those overflows count as faults, so prefer bf16 or allow a
larger ``max_consecutive``.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch

from shared.errors import TooManyFaultsError
from shared.training.distributed import any_process

__all__ = ["FaultGuard", "SanitizedRewards", "sanitize_rewards"]

log = logging.getLogger(__name__)


class SanitizedRewards(NamedTuple):
    """``rewards``: the finite rewards of the kept samples (``original[keep]``); ``keep``: bool mask over the batch;
    ``n_dropped``: how many samples were dropped."""

    rewards: torch.Tensor
    keep: torch.Tensor
    n_dropped: int


def sanitize_rewards(rewards: Any) -> SanitizedRewards:
    """Drop samples whose reward is NaN or ±inf.

    ``rewards``: shape (B,) or (B, K) for K reward components (a sample is dropped if any component is non-finite);
    a tensor, array or list (converted with ``torch.as_tensor``). Index every other per-sample tensor (latents,
    log-probs, group ids, prompts) with ``keep`` so they stay aligned.
    """
    r = torch.as_tensor(rewards)
    if r.dim() == 0:
        raise ValueError("rewards must have a batch dimension, got a scalar")
    finite = torch.isfinite(r) if r.is_floating_point() else torch.ones_like(r, dtype=torch.bool)
    keep = finite.reshape(r.shape[0], -1).all(dim=1) if r.dim() > 1 else finite
    n_dropped = int((~keep).sum())
    return SanitizedRewards(r[keep], keep, n_dropped)


def _tensor_list(parameters: Iterable[Any]) -> list[tuple[str, torch.Tensor]]:
    out = []
    for i, p in enumerate(parameters):
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
            out.append(p)
        else:
            out.append((f"parameter[{i}]", p))
    return out


class FaultGuard:
    """Counts faults, decides whether an optimiser step may run, and stops a run that keeps failing.

    Args:
        max_consecutive: faulty steps tolerated in a row; one more calls ``on_abort`` and raises TooManyFaultsError.
        on_abort: zero-argument callback run before raising (save a checkpoint there; the parameters are those of the
            last good step because faulty steps were skipped).

    Counters (also in :meth:`metrics` and :meth:`state_dict`): ``dropped_samples`` (non-finite rewards),
    ``skipped_steps`` (optimiser steps not taken), ``consecutive`` (current run of faulty steps; reset by a good step).
    """

    def __init__(self, max_consecutive: int = 5, *, on_abort: Callable[[], Any] | None = None):
        if not isinstance(max_consecutive, int) or isinstance(max_consecutive, bool) or max_consecutive < 0:
            raise ValueError(f"max_consecutive must be an int >= 0, got {max_consecutive!r}")
        self.max_consecutive = max_consecutive
        self.on_abort = on_abort
        self.dropped_samples = 0
        self.skipped_steps = 0
        self.consecutive = 0
        self.steps_attempted = 0
        self.last_grad_norm: float | None = None
        self.recent: collections.deque[str] = collections.deque(maxlen=5)
        self._pending: str | None = None

    # ---------------------------------------------------------------------------------------------------- checks
    def check_rewards(self, rewards: Any) -> SanitizedRewards:
        """:func:`sanitize_rewards` plus counting; a batch with no finite reward counts as a skipped step."""
        out = sanitize_rewards(rewards)
        if out.n_dropped:
            self.dropped_samples += out.n_dropped
            log.warning("dropped %d of %d samples with non-finite rewards (total dropped: %d)",
                        out.n_dropped, out.keep.numel(), self.dropped_samples)
        if out.keep.numel() and not out.keep.any():
            self.steps_attempted += 1
            self._fault(f"all {out.keep.numel()} rewards non-finite")
        return out

    def check_loss(self, loss: torch.Tensor | float) -> bool:
        """True if the loss is finite. A non-finite loss is remembered and makes the next :meth:`step` skip."""
        value = torch.as_tensor(loss).detach()
        if bool(torch.isfinite(value).all()):
            return True
        shown = value.item() if value.numel() == 1 else "tensor with non-finite entries"
        self._pending = self._pending or f"non-finite loss ({shown})"
        log.warning("non-finite loss (%s): the next optimiser step will be skipped", shown)
        return False

    @staticmethod
    def grad_problem(parameters: Iterable[Any]) -> str | None:
        """None if every existing ``.grad`` is finite, else a description naming the first bad parameter.

        Accepts tensors or ``(name, tensor)`` pairs (``model.named_parameters()``). Local to this process.
        """
        named = [(n, p.grad) for n, p in _tensor_list(parameters) if p.grad is not None]
        if not named:
            return None
        flags = torch.stack([torch.isfinite(g).all() for _, g in named])
        if bool(flags.all()):
            return None
        name, g = named[int((~flags).nonzero()[0])]
        kind = "NaN" if bool(torch.isnan(g).any()) else "inf"
        return f"non-finite gradient ({kind}) in {name}"

    def check_grads(self, parameters: Iterable[Any]) -> bool:
        """True if every existing gradient is finite (this process only; :meth:`step` also combines processes)."""
        return self.grad_problem(parameters) is None

    # ---------------------------------------------------------------------------------------------------- step
    def step(self, optimizer: torch.optim.Optimizer, parameters: Iterable[Any], *, max_grad_norm: float | None = None,
             clip_grad_norm: Callable[..., Any] | None = None, scheduler: Any = None) -> bool:
        """Take the optimiser step if the loss (since the last step) and all gradients are finite; else skip it.

        Good step: optional clipping (``clip_grad_norm(params, max_grad_norm)``, default
        ``torch.nn.utils.clip_grad_norm_``; pass ``accelerator.clip_grad_norm_`` under accelerate),
        ``optimizer.step()``, ``scheduler.step()`` if given, ``optimizer.zero_grad()``; ``consecutive`` resets.
        Faulty step: gradients zeroed, no optimiser or scheduler step, counters incremented, possibly abort.
        ``parameters`` may be ``model.named_parameters()`` so messages name the bad tensor. Returns whether the
        step was taken.
        """
        named = _tensor_list(parameters)
        tensors = [p for _, p in named]
        device = tensors[0].device if tensors else torch.device("cpu")
        self.steps_attempted += 1
        grad_problem = self.grad_problem(named)
        problem = self._pending or grad_problem
        self._pending = None
        bad = any_process(problem is not None, device)
        if bad and problem is None:
            problem = "non-finite loss or gradient on another process"
        grad_norm = None
        if not bad and max_grad_norm is not None:
            clip = clip_grad_norm or torch.nn.utils.clip_grad_norm_
            grad_norm = float(clip(tensors, max_grad_norm))
            if not math.isfinite(grad_norm):  # finite grads whose norm overflows (fp16)
                bad, problem = True, f"non-finite gradient norm ({grad_norm})"
        if bad:
            if grad_problem is not None and getattr(optimizer, "scaler", None) is not None:
                optimizer.step()  # the GradScaler sees inf/NaN, skips the update and lowers its scale
            optimizer.zero_grad(set_to_none=True)
            self._fault(problem)
            return False
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.consecutive = 0
        self.last_grad_norm = grad_norm
        return True

    def _fault(self, problem: str) -> None:
        self.skipped_steps += 1
        self.consecutive += 1
        self.recent.append(problem)
        log.warning("skipped optimiser step: %s (%d in a row, %d skipped in total)",
                    problem, self.consecutive, self.skipped_steps)
        if self.consecutive > self.max_consecutive:
            self._abort()

    def _abort(self) -> None:
        msg = (f"training stopped: {self.consecutive} faulty steps in a row (max_consecutive={self.max_consecutive}); "
               f"most recent: {'; '.join(self.recent)}. Totals: {self.skipped_steps} skipped optimiser steps, "
               f"{self.dropped_samples} samples dropped for non-finite rewards, "
               f"{self.steps_attempted} steps attempted. "
               "Try: a lower learning rate, gradient clipping (max_grad_norm, e.g. 1.0), fp32 log-prob math or bf16 "
               "instead of fp16, and check the reward function for NaN/inf outputs.")
        if self.on_abort is not None:
            try:
                self.on_abort()
                msg += " A checkpoint was written by on_abort before stopping."
            except Exception as e:  # report, then still stop the run
                msg += f" The on_abort callback failed too: {type(e).__name__}: {e}."
                raise TooManyFaultsError(msg) from e
        raise TooManyFaultsError(msg)

    # ---------------------------------------------------------------------------------------------------- state
    def metrics(self) -> dict[str, float]:
        """Counters to log every step (``faults/…``; ``grad_norm`` after a clipped good step)."""
        out: dict[str, float] = {"faults/dropped_samples": self.dropped_samples,
                                 "faults/skipped_steps": self.skipped_steps, "faults/consecutive": self.consecutive}
        if self.last_grad_norm is not None:
            out["grad_norm"] = self.last_grad_norm
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"dropped_samples": self.dropped_samples, "skipped_steps": self.skipped_steps,
                "consecutive": self.consecutive, "steps_attempted": self.steps_attempted,
                "last_grad_norm": self.last_grad_norm, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dropped_samples = int(state["dropped_samples"])
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive = int(state["consecutive"])
        self.steps_attempted = int(state.get("steps_attempted", 0))
        self.last_grad_norm = state.get("last_grad_norm")
        self.recent = collections.deque(state.get("recent", []), maxlen=5)
