"""The small interface every masked text-to-image model sits behind (STYLE.md rule 4).

A backend turns prompts into conditioning, token grids into logits over its image codebook, and token grids into
pixels. The sampler, the log-probabilities, the replay and the trainer only ever talk to this protocol, so the
shapes-world base, diffusers' aMUSEd and Show-o share one code path.

Token convention: an image is a LongTensor (B, N) of N = h·w codes in [0, codebook_size), with `mask_id` at masked
positions (`mask_id` may lie outside [0, K): aMUSEd uses 8255 with K = 8192). Model-specific id offsets (Show-o's
image codes live after the 50 295 text tokens) stay inside the backend.

Conditioning is a `Cond` = dict of tensors, every one batch-first, so that the trainer can index, repeat and
concatenate it without knowing what is inside (`index_cond`, `cat_cond`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Cond = dict[str, Tensor]


@runtime_checkable
class MaskedPolicy(Protocol):
    """A masked generative text-to-image model (MaskGIT / Show-o / aMUSEd family).

    Attributes: `mask_id` (the [MASK] token in the (B, N) grids passed to `logits`), `codebook_size` K (the number of
    image codes `logits` scores), `grid` (h, w) with N = h·w.
    """

    mask_id: int
    codebook_size: int
    grid: tuple[int, int]

    def encode(self, prompts: Sequence[str]) -> Cond:
        """Conditioning for a batch of prompts; the empty prompt "" is the unconditional input used by CFG."""
        ...

    def logits(self, tokens: Tensor, cond: Cond) -> Tensor:
        """Unguided scores (B, N, K) over the image codebook at every position of `tokens` (B, N)."""
        ...

    def decode(self, tokens: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] from complete token grids (B, N) (no mask tokens)."""
        ...

    def trainable(self) -> nn.Module:
        """The module whose parameters GRPO updates (the transformer; the tokenizer and text encoder stay frozen)."""
        ...


def num_tokens(policy: MaskedPolicy) -> int:
    """N = h·w image tokens per sample."""
    h, w = policy.grid
    return int(h) * int(w)


def index_cond(cond: Cond, index: Tensor | slice | Sequence[int]) -> Cond:
    """Select samples (dim 0) from every tensor of `cond`."""
    if not isinstance(index, slice):
        index = torch.as_tensor(index, dtype=torch.long)
    out = {}
    for key, value in cond.items():
        idx = index if isinstance(index, slice) else index.to(value.device)
        out[key] = value[idx]
    return out


def cat_cond(conds: Sequence[Cond]) -> Cond:
    """Concatenate conditionings along the batch (all must hold the same keys)."""
    if not conds:
        raise ValueError("cat_cond needs at least one conditioning")
    keys = set(conds[0])
    for c in conds[1:]:
        if set(c) != keys:
            raise ValueError(f"cat_cond: conditionings hold different keys {sorted(keys)} vs {sorted(c)}")
    return {k: torch.cat([c[k] for c in conds], dim=0) for k in conds[0]}


def cond_batch_size(cond: Cond) -> int:
    """The common leading dimension of the tensors in `cond`."""
    sizes = {int(v.shape[0]) for v in cond.values()}
    if len(sizes) != 1:
        raise ValueError(f"conditioning tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def guided_logits(policy: MaskedPolicy, tokens: Tensor, cond: Cond, uncond: Cond | None, cfg_scale: float) -> Tensor:
    """Classifier-free guidance in diffusers' form l = l_u + w·(l_c − l_u) (w = 1: off; Show-o's (1+w')·l_c − w'·l_u is
    w = 1 + w', so Show-o's evaluation guidance 5 is `cfg_scale=6`). One batched forward when guidance is on."""
    if cfg_scale == 1.0 or uncond is None:
        return policy.logits(tokens, cond)
    both = policy.logits(torch.cat([tokens, tokens], dim=0), cat_cond([uncond, cond]))
    l_u, l_c = both.chunk(2, dim=0)
    return l_u + cfg_scale * (l_c - l_u)
