"""A toy masked policy: the smallest `MaskedPolicy` (a prompt table, a token embedding and a position mix), for
tests and for reading the protocol. Prompts are "<anything> <int>"; "" is the unconditional prompt."""

from __future__ import annotations

import torch
from torch import nn


class ToyPolicy(nn.Module):
    """Implements mask_grpo.policy.MaskedPolicy: logits depend on the prompt id, the position and the tokens."""

    def __init__(self, codebook_size: int = 5, grid: tuple[int, int] = (2, 3), num_prompts: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.codebook_size, self.grid, self.mask_id = codebook_size, grid, codebook_size
        n = grid[0] * grid[1]
        self.prompt = nn.Parameter(torch.randn(num_prompts + 1, n, codebook_size, generator=g))
        self.tok = nn.Parameter(0.5 * torch.randn(codebook_size + 1, codebook_size, generator=g))
        self.mix = nn.Parameter(0.3 * torch.randn(n, n, generator=g))

    def encode(self, prompts):
        ids = [0 if p == "" else 1 + (int(p.split()[-1]) % (self.prompt.shape[0] - 1)) for p in prompts]
        return {"ids": torch.tensor(ids)}

    def logits(self, tokens, cond):
        t = self.tok[tokens]  # (B, N, K)
        return self.prompt[cond["ids"]] + torch.einsum("nm,bmk->bnk", self.mix, t)

    def decode(self, tokens):
        b = tokens.shape[0]
        return (tokens.float() / self.codebook_size).view(b, 1, *self.grid).expand(b, 3, *self.grid)

    def trainable(self):
        return self
