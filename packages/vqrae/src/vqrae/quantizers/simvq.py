"""SimVQ: a frozen Gaussian codebook used through one learned linear map (card §2; Zhu et al. 2024, "Addressing
Representation Collapse in Vector Quantized Models with One Linear Layer"; vector-quantize-pytorch ``SimVQ``).

    C ∈ R^{k×e}  frozen buffer, C_ij ~ N(0, 1/e)          (std 1/√e: 1/√1536 ≈ 0.0255 at the paper's e)
    W ∈ R^{e×e}  learned, bias-free; effective codes C·W  (row i: c_i W)
    index_n = argmin_i ‖z_n − c_i W‖₂                      (plain l2, no normalisation)
    q_n = c_{index_n} W;  loss = ‖sg(z) − q‖² + β‖z − sg(q)‖²  (β = 0.25, card §3)

Every code moves whenever W moves, so no code can be left behind by the optimiser — SimVQ's answer to collapse.

W starts at the identity (our choice; vector-quantize-pytorch and the SimVQ code keep ``nn.Linear``'s default
uniform(±1/√e) init). With W = I the codes used at step 0 are exactly the Gaussian C whose small std the SimVQ authors
say matters (vector-quantize-pytorch #170, card §2), and the map starts orthogonal (all singular values 1), whereas the
default init shrinks the codes to norm ≈ 1/√3 and spreads W's singular values down towards 0, squashing some
directions of the code space before training starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqrae.quantizers import QuantizerOutput, quantizer_losses, register_quantizer, rotate_to, straight_through
from vqrae.quantizers.nearest import nearest_code

__all__ = ["SimVQ"]


@register_quantizer("simvq")
class SimVQ(nn.Module):
    """SimVQ quantizer: ``forward(z (…, e)) → QuantizerOutput``; ``codes()`` = C·W (k, e); ``lookup(ids)`` → vectors.

    ``rotation_trick``: the output's gradient into z is the downstream gradient rotated and rescaled by the detached
    map taking z to q (``rotate_to``), instead of copied unchanged (plain straight-through).
    The codebook C is drawn from torch's global RNG at construction (seed it with ``torch.manual_seed``) and saved
    in the state dict.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, rotation_trick: bool = False):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"quantizer.codebook_size={codebook_size} and quantizer.dim={dim} must both be ≥ 1")
        if beta < 0:
            raise ValueError(f"quantizer.beta={beta} must be ≥ 0 (the paper uses 0.25)")
        self.codebook_size, self.dim, self.beta, self.rotation_trick = codebook_size, dim, beta, rotation_trick
        self.register_buffer("codebook", torch.randn(codebook_size, dim) * dim**-0.5)
        self.weight = nn.Parameter(torch.eye(dim))

    def codes(self) -> Tensor:
        """The effective codebook C·W, (k, e); differentiable w.r.t. W."""
        return self.codebook @ self.weight

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors (…, e) for integer ids (…)."""
        return F.embedding(indices, self.codes())

    def forward(self, z: Tensor) -> QuantizerOutput:
        if z.shape[-1] != self.dim:
            raise ValueError(f"input last dim {z.shape[-1]} != quantizer.dim={self.dim}; project the features to it")
        codes = self.codes()
        indices, _ = nearest_code(z.detach().reshape(-1, self.dim), codes.detach())
        indices = indices.view(z.shape[:-1])
        q = F.embedding(indices, codes)
        codebook_loss, commit_loss = quantizer_losses(z, q)
        out = rotate_to(z, q) if self.rotation_trick else straight_through(z, q)
        return QuantizerOutput(out, indices, codebook_loss + self.beta * commit_loss, codebook_loss, commit_loss)

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, "
                f"rotation_trick={self.rotation_trick}")
