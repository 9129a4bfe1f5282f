"""Codebook usage: utilisation, perplexity and dead codes (card §5 Table 5, §7 metrics; vector-quantize-pytorch #24).

With counts n_i of code i over T assigned tokens (k codes), p_i = n_i / T:

    utilisation(τ) = |{i : p_i > τ/k}| / k      τ = 0: fraction of codes used at all (our default);
                                                 τ = 0.01: UniTok's definition (frequency > 0.01/k), card §7
    perplexity     = exp(−Σ_i p_i log p_i)        (0·log 0 = 0): k for uniform usage, 1 for a single code
    dead codes     = |{i : n_i = 0}|

``CodeUsage`` accumulates counts over many batches (and over ranks with ``all_reduce``); ``usage_stats`` gives the
same numbers for one batch of indices.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["CodeUsage", "all_reduce_sum", "usage_stats"]


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` in place across processes when torch.distributed is initialised; a no-op otherwise. Returns ``t``."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class CodeUsage:
    """Accumulated code counts (k,) (int64, on the device of the first ``update``)."""

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size={codebook_size} must be ≥ 1 (quantizer.codebook_size)")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, indices: Tensor) -> CodeUsage:
        """Add the counts of ``indices`` (any shape, values in [0, k))."""
        flat = indices.detach().reshape(-1).long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}) (codebook_size); got "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        if self.counts.device != flat.device:
            self.counts = self.counts.to(flat.device)
        self.counts += torch.bincount(flat, minlength=self.codebook_size)
        return self

    def all_reduce(self) -> CodeUsage:
        """Sum the counts over ranks (torch.distributed, when initialised; otherwise nothing happens)."""
        all_reduce_sum(self.counts)
        return self

    def reset(self) -> None:
        self.counts.zero_()

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def utilisation(self, threshold: float = 0.0) -> float:
        """Fraction of codes with frequency n_i/T > threshold/k (0.0 with no counts). UniTok: threshold=0.01."""
        total = self.total
        if total == 0:
            return 0.0
        freq = self.counts.double() / total
        return float((freq > threshold / self.codebook_size).double().mean())

    def perplexity(self) -> float:
        """exp(entropy of n/T): k for uniform usage, 1 for one code; 0.0 with no counts (no distribution yet)."""
        total = self.total
        if total == 0:
            return 0.0
        p = self.counts.double() / total
        p = p[p > 0]
        return math.exp(float(-(p * p.log()).sum()))

    def dead_codes(self) -> int:
        """Number of codes never assigned."""
        return int((self.counts == 0).sum())

    def as_dict(self, prefix: str = "", threshold: float = 0.0) -> dict[str, float]:
        """{prefix+"utilisation", "perplexity", "dead_codes", "tokens"} for logging."""
        return {f"{prefix}utilisation": self.utilisation(threshold), f"{prefix}perplexity": self.perplexity(),
                f"{prefix}dead_codes": self.dead_codes(), f"{prefix}tokens": self.total}


def usage_stats(indices: Tensor, codebook_size: int, threshold: float = 0.0) -> dict[str, float]:
    """``CodeUsage.as_dict()`` for one batch of indices: utilisation, perplexity, dead_codes, tokens."""
    return CodeUsage(codebook_size).update(indices).as_dict(threshold=threshold)
