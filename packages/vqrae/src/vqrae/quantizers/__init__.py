"""Vector quantizers: one module per quantizer, each returning a ``QuantizerOutput`` (card §2, §3, §8).

    out = build_quantizer("simvq", codebook_size=16_384, dim=1536)(z)     # z: (B, N, e)
    out.quantized   (B, N, e)   forward value = the selected codes exactly; gradient reaches z (straight-through)
    out.indices     (B, N)      long, argmin_i ‖z − c_i‖₂
    out.loss        ()          codebook_loss + β·commit_loss                                   (card §3, β = 0.25)
    codebook_loss = mean ‖sg(z) − q‖²     (moves the codes: W for SimVQ, the codebook for learned VQ)
    commit_loss   = mean ‖z − sg(q)‖²     (moves the encoder side)

Means are over all elements (B·N·e), as ``F.mse_loss`` in vector-quantize-pytorch and taming.

Kinds (``quantizer.kind``): ``simvq`` (``SimVQ``, the paper's: frozen Gaussian codebook through a learned linear
map) and ``vq`` (``VQ``, the plain baseline: learned or EMA codebook, optional dead-code restarts).

Why our own ~40-line quantizers instead of vector-quantize-pytorch's ``SimVQ``/``VectorQuantize`` (whose
``(quantized, indices, loss)`` API shape we copy, card §8): exact control of the two loss terms the paper specifies
(where each stop-gradient sits and which tensor each term trains), no interacting constructor flags (EMA × learnable ×
dead-code expiry × rotation trick × cosine codes), and tests on hand-computed values of every formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.errors import ConfigError

__all__ = ["QUANTIZERS", "VQ", "QuantizerOutput", "SimVQ", "build_quantizer", "nearest_code", "quantizer_losses",
           "register_quantizer", "rotate_to", "straight_through"]


@dataclass
class QuantizerOutput:
    """What every quantizer returns (card §3).

    ``quantized`` (…, e): straight-through output, forward value = the selected codes, gradient → input.
    ``indices`` (…): long code ids. ``loss`` = ``codebook_loss`` + β·``commit_loss`` (scalars).
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commit_loss: Tensor


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """sg(q) + (z − sg(z)): forward value is q exactly (in z's dtype), ∂out/∂z = I, no gradient to q.

    Written this way round (not ``z + sg(q − z)``) so the forward value is bit-exact q: z − sg(z) is exactly 0.
    """
    return q.detach().to(z.dtype) + (z - z.detach())


def rotate_to(z: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    """Rotation trick (Fifty et al. 2024, arXiv 2410.06424 §4.2): forward value q, gradient λ·Rᵀ·∂L/∂q into z.

        ẑ = z/‖z‖,  q̂ = q/‖q‖,  r = (ẑ + q̂)/‖ẑ + q̂‖,  R = I − 2rrᵀ + 2q̂ẑᵀ  (R ẑ = q̂),  λ = ‖q‖/‖z‖
        out = sg(λR)·z = λ·(z − 2(r·z)r + 2(ẑ·z)q̂)        — R is never formed; r, ẑ, q̂, λ are detached.

    λR z = q mathematically; the returned value is made bit-exact q by ``sg(q) + (a − sg(a))`` with a = λR z, which
    keeps a's gradient: ∂L/∂z = λ Rᵀ ∂L/∂out. Computed in float32 (at least). Degenerate rows (z = 0, or q
    antiparallel to z so ẑ + q̂ = 0) are guarded by ``eps`` only against division by zero, not made meaningful.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    zf, qf = z.to(dtype), q.detach().to(dtype)
    with torch.no_grad():
        zn = zf.norm(dim=-1, keepdim=True)
        qn = qf.norm(dim=-1, keepdim=True)
        zh, qh = zf / zn.clamp_min(eps), qf / qn.clamp_min(eps)
        r = zh + qh
        r = r / r.norm(dim=-1, keepdim=True).clamp_min(eps)
        lam = qn / zn.clamp_min(eps)
    rz = zf - 2 * (zf * r).sum(-1, keepdim=True) * r + 2 * (zf * zh).sum(-1, keepdim=True) * qh
    a = lam * rz
    return (qf + (a - a.detach())).to(z.dtype)


def quantizer_losses(z: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """(codebook_loss, commit_loss) = (mean ‖sg(z) − q‖², mean ‖z − sg(q)‖²) in float32 (card §3, SimVQ's sg placement).

    The codebook term's gradient reaches only q (→ W or the codebook); the commitment term's only z.
    """
    zf, qf = z.float(), q.float()
    return F.mse_loss(qf, zf.detach()), F.mse_loss(zf, qf.detach())


QUANTIZERS: dict[str, type[nn.Module]] = {}


def register_quantizer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``build_quantizer(name, ...)`` construct the class."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        QUANTIZERS[name] = cls
        return cls

    return deco


def build_quantizer(kind: str, codebook_size: int, dim: int, **kw: Any) -> nn.Module:
    """The quantizer registered as ``kind`` ("simvq" | "vq"), built with ``(codebook_size, dim, **kw)``.

    For ``simvq`` the vq-only keywords ``ema_decay`` / ``dead_code_threshold`` are accepted when off (None or 0,
    as the config's defaults) and rejected otherwise.
    """
    if kind not in QUANTIZERS:
        raise ConfigError(f"quantizer.kind={kind!r} is unknown; use one of {sorted(QUANTIZERS)}")
    if kind == "simvq":
        for name in ("ema_decay", "dead_code_threshold"):
            value = kw.pop(name, None)
            if value:
                raise ConfigError(f"quantizer.{name}={value} only applies to quantizer.kind=vq; set it to 0")
    return QUANTIZERS[kind](codebook_size, dim, **kw)


# Imported last: the modules below register themselves and use the helpers defined above.
from vqrae.quantizers.nearest import nearest_code  # noqa: E402
from vqrae.quantizers.simvq import SimVQ  # noqa: E402
from vqrae.quantizers.vq import VQ  # noqa: E402
