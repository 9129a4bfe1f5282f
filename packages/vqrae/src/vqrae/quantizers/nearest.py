"""Nearest-code search, the one kernel every quantizer shares (card §2: index = argmin_i ‖z − c_i‖₂, no normalisation).

    argmin_i ‖z − c_i‖² = argmin_i (‖c_i‖² − 2 z·c_i)        (‖z‖² is the same for every i)

One ``torch.addmm`` per chunk of rows of z: the (M, k) distance matrix is never held whole, so memory stays at
chunk × k floats (4096 × 16,384 × 4 B = 256 MiB at the paper's k) however many tokens come in.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nearest_code"]


@torch.no_grad()
def nearest_code(z: Tensor, codes: Tensor, *, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """(indices (M,) long, squared distances (M,)) of the nearest row of ``codes`` (k, e) to each row of ``z`` (M, e).

    d_i = ‖c_i‖² − 2 z·c_i via ``addmm``; ‖z‖² is added only to the returned minimum, clamped at 0 against rounding.
    Computed in float32 at least (bf16/fp16 inputs are upcast; float64 stays float64). Ties → the lowest index
    (``torch.argmin`` returns the first minimum). No gradient flows (``torch.no_grad``).
    """
    if z.ndim != 2 or codes.ndim != 2 or z.shape[1] != codes.shape[1]:
        raise ValueError(f"nearest_code needs z (M, e) and codes (k, e) with the same e; got {tuple(z.shape)} and "
                         f"{tuple(codes.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be ≥ 1 (rows of z per distance block)")
    dtype = torch.promote_types(torch.promote_types(z.dtype, codes.dtype), torch.float32)
    c = codes.to(dtype)
    c_sq = c.pow(2).sum(1)
    c_t = c.t()
    m = z.shape[0]
    indices = torch.empty(m, dtype=torch.long, device=z.device)
    dist = torch.empty(m, dtype=dtype, device=z.device)
    for s in range(0, m, chunk):
        zc = z[s:s + chunk].to(dtype)
        d = torch.addmm(c_sq, zc, c_t, beta=1, alpha=-2)  # (m_chunk, k) = ‖c‖² − 2 z·cᵀ
        best = d.argmin(1)
        indices[s:s + chunk] = best
        dist[s:s + chunk] = (d.gather(1, best[:, None]).squeeze(1) + zc.pow(2).sum(1)).clamp_min(0)
    return indices, dist
