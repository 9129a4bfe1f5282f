"""Relative L1 distance between consecutive latents: the signal GCPO cuts chunks by (chunk_grpo.md §5, Eq. 16).

Step k of a rollout goes x_k → x_{k+1} (σ_k → σ_{k+1}, σ: 1 → 0; k = 0 is the highest-noise step), and

    L1rel_k = mean|x_{k+1} − x_k| / (mean|x_k| + ε),    ε = 1e-8,

the mean over every latent element of one sample. This is the paper's ‖x_t − x_{t−1}‖₁ / ‖x_t‖₁ (its x_t is our x_k,
the latent before the step; both norms have the same element count, so means equal norms' ratio) and exactly the
authors' code (`train_grpo_flux_hpsv3.py`, `l1_changes / (prev + 1e-8)` on the stored rollout latents).
[paper, authors' code]

The paper calls the curve "prompt-invariant yet step-dependent"; :func:`group_mean` / :func:`batch_mean` pool it over
a prompt group or the whole batch (our default for adaptive chunking is the group mean, §5 "Our adaptive rule" 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EPS", "SCOPES", "batch_mean", "curve_stats", "group_mean", "l1rel", "pooled"]

EPS = 1e-8
"""Denominator guard of Eq. 16, as in the authors' code."""

SCOPES = ("group", "batch", "trajectory")


def l1rel(latents: Tensor, eps: float = EPS) -> Tensor:
    """(B, T+1, ...) rollout latents (``Trajectory.latents``; ``latents[:, 0]`` is the noise at σ = 1) → (B, T).

    ``out[i, k] = mean|x_{k+1} − x_k| / (mean|x_k| + eps)`` over the latent elements of sample i (Eq. 16). Computed
    in float32 without gradients; works for unpacked (C, H, W) and packed (seq, C) latents alike.
    """
    if latents.ndim < 3:
        raise ValueError(f"latents must have shape (B, T+1, ...), got {tuple(latents.shape)}")
    if latents.shape[1] < 2:
        raise ValueError(f"latents hold {latents.shape[1]} state(s); need T+1 >= 2 for one transition")
    x = latents.detach().float().flatten(2)
    change = (x[:, 1:] - x[:, :-1]).abs().mean(-1)
    before = x[:, :-1].abs().mean(-1)
    return change / (before + eps)


def _check_values(values: Tensor) -> None:
    if values.ndim != 2:
        raise ValueError(f"values must have shape (B, T), got {tuple(values.shape)}")


def group_mean(values: Tensor, group_ids: Tensor) -> Tensor:
    """(B, T) per-sample curves → (B, T) where row i is the mean curve of the samples sharing ``group_ids[i]``.

    Only the rows given are pooled: when a group's G copies are spread over processes (Flow-GRPO layout), each
    process pools the members it holds.
    """
    _check_values(values)
    ids = torch.as_tensor(group_ids).reshape(-1).cpu()
    if ids.numel() != values.shape[0]:
        raise ValueError(f"group_ids has {ids.numel()} entries for {values.shape[0]} curves")
    out = torch.empty_like(values)
    for g in ids.unique():
        rows = (ids == g).nonzero().flatten().to(values.device)
        out[rows] = values[rows].mean(dim=0)
    return out


def batch_mean(values: Tensor) -> Tensor:
    """(B, T) per-sample curves → (B, T) where every row is the mean curve of the whole batch."""
    _check_values(values)
    return values.mean(dim=0, keepdim=True).expand_as(values).clone()


def pooled(values: Tensor, group_ids: Tensor, scope: str) -> Tensor:
    """The curve each sample's adaptive chunking is computed from: ``scope`` = group | batch | trajectory."""
    if scope == "group":
        return group_mean(values, group_ids)
    if scope == "batch":
        return batch_mean(values)
    if scope == "trajectory":
        _check_values(values)
        return values.clone()
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def curve_stats(values: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) curves → (mean, std) over samples, each (T,); std is the population std (0 for one sample)."""
    _check_values(values)
    return values.mean(dim=0), values.std(dim=0, unbiased=False)
