"""Plain VQ, the baseline (van den Oord et al. 2017; EMA updates from its appendix and Razavi et al. 2019;
dead-code restarts as vector-quantize-pytorch's ``threshold_ema_dead_code``). Card §2, §3, §8.

    index_n = argmin_i ‖z_n − c_i‖₂;  q_n = c_{index_n};  loss = ‖sg(z) − q‖² + β‖z − sg(q)‖²

Learned (``ema_decay`` None or 0, the config's "off"): C is a parameter trained by the codebook term.

EMA (``ema_decay`` = γ ∈ (0, 1)): C is a buffer (no gradient, codebook_loss = 0, loss = β·commit). After each
training forward, with n_i(t) = #{n : index_n = i} and s_i(t) = Σ_{index_n = i} z_n over the (all-reduced) batch:

    N_i ← γ N_i + (1 − γ) n_i(t)          cluster sizes, start at 1
    M_i ← γ M_i + (1 − γ) s_i(t)          summed vectors, start at C(0)
    Ñ_i = (N_i + ε) / (Σ_j N_j + k ε) · Σ_j N_j     Laplace smoothing: no division by 0 for unused codes
    c_i = M_i / Ñ_i

The returned ``quantized`` uses the codes before this update.

Dead-code restarts (``dead_code_threshold`` = τ > 0, EMA mode only — N_i is the usage it is defined on): after the
update every code with N_i < τ (units: assignments per global batch) is replaced by a row of the current batch drawn
uniformly with replacement by ``self.generator`` (a ``torch.Generator`` seeded from torch's RNG at construction, its
state saved in the state dict), and gets N_i = τ, M_i = τ·c_i. Across processes the counts and sums are all-reduced and
the drawn rows are rank 0's (broadcast), so every rank holds the same codebook.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqrae.quantizers import QuantizerOutput, quantizer_losses, register_quantizer, straight_through
from vqrae.quantizers.nearest import nearest_code
from vqrae.usage import all_reduce_sum

__all__ = ["VQ"]


@register_quantizer("vq")
class VQ(nn.Module):
    """Plain VQ: ``forward(z (…, e)) → QuantizerOutput``; ``codes()`` (k, e); ``lookup(ids)`` → vectors.

    The codebook starts as N(0, 1/e), like SimVQ's, drawn from torch's global RNG.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, ema_decay: float | None = None,
                 dead_code_threshold: float = 0.0, eps: float = 1e-5):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"quantizer.codebook_size={codebook_size} and quantizer.dim={dim} must both be ≥ 1")
        if beta < 0:
            raise ValueError(f"quantizer.beta={beta} must be ≥ 0 (the paper uses 0.25)")
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"quantizer.ema_decay={ema_decay} must lie in [0, 1) (0 or None: learned codebook)")
        if dead_code_threshold < 0:
            raise ValueError(f"quantizer.dead_code_threshold={dead_code_threshold} must be ≥ 0 (0 = off)")
        self.ema = bool(ema_decay)
        if dead_code_threshold > 0 and not self.ema:
            raise ValueError(f"quantizer.dead_code_threshold={dead_code_threshold} needs EMA usage statistics: "
                             "set quantizer.ema_decay > 0 (e.g. 0.99) or the threshold to 0")
        if eps <= 0:
            raise ValueError(f"eps={eps} must be > 0 (Laplace smoothing of the EMA cluster sizes)")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.ema_decay, self.dead_code_threshold, self.eps = float(ema_decay or 0.0), dead_code_threshold, eps
        init = torch.randn(codebook_size, dim) * dim**-0.5
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))

    def codes(self) -> Tensor:
        return self.codebook

    def lookup(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook)

    def forward(self, z: Tensor) -> QuantizerOutput:
        if z.shape[-1] != self.dim:
            raise ValueError(f"input last dim {z.shape[-1]} != quantizer.dim={self.dim}; project the features to it")
        flat = z.detach().reshape(-1, self.dim)
        indices, _ = nearest_code(flat, self.codebook.detach())
        q = F.embedding(indices.view(z.shape[:-1]), self.codebook)
        codebook_loss, commit_loss = quantizer_losses(z, q)
        if self.ema:
            codebook_loss = torch.zeros((), device=z.device)
            if self.training:
                self._ema_update(flat, indices)
        out = straight_through(z, q)
        return QuantizerOutput(out, indices.view(z.shape[:-1]), codebook_loss + self.beta * commit_loss,
                               codebook_loss, commit_loss)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor) -> None:
        """The EMA and restart step of the module docstring; statistics all-reduced over ranks."""
        flat = flat.float()
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
        all_reduce_sum(counts)
        all_reduce_sum(sums)
        g = self.ema_decay
        self.cluster_size.mul_(g).add_(counts, alpha=1 - g)
        self.embed_sum.mul_(g).add_(sums, alpha=1 - g)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart(flat, self.cluster_size < self.dead_code_threshold)

    def _restart(self, flat: Tensor, dead: Tensor) -> None:
        n_dead = int(dead.sum())  # the same on every rank: cluster_size is built from all-reduced counts
        distributed = dist.is_available() and dist.is_initialized()
        if n_dead == 0 or (flat.shape[0] == 0 and not distributed):
            return
        pick = torch.randint(max(flat.shape[0], 1), (n_dead,), generator=self.generator)
        new = flat[pick.to(flat.device)].contiguous() if flat.shape[0] else flat.new_zeros(n_dead, self.dim)
        if distributed:
            dist.broadcast(new, src=0)
        tau = self.dead_code_threshold
        self.codebook[dead] = new
        self.embed_sum[dead] = new * tau
        self.cluster_size[dead] = tau

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, ema_decay={self.ema_decay}, "
                f"dead_code_threshold={self.dead_code_threshold}")
