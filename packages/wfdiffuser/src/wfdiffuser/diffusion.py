"""DDPM/DDIM math for trajectory diffusion: cosine schedule, noising, ε-prediction loss, the two samplers (card §3, §6).

A sample is a *list* of tensors ``[x_1, ..., x_K]`` (the wavelet bands of WFDiffuser, or one tensor for Decision
Diffuser and Diffuser), each (B, L_k, C). All bands share the timestep t and draw independent noise (card §3: the
same t for both bands, independent ε_L, ε_H).

Schedule (Nichol & Dhariwal's cosine, as Janner's ``cosine_beta_schedule`` and diffusers' ``squaredcos_cap_v2``):

    ᾱ(u) = cos²(((u + s)/(1 + s))·π/2),   β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), 0.999),   ᾱ_t = Π_{i≤t}(1 − β_i)

Noising: x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε. The model predicts ε; x̂_0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂, clipped to [−1, 1].

DDPM step (posterior q(x_{t−1} | x_t, x̂_0), "fixed small" variance):

    μ = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x̂_0 + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t,   σ² = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)
    x_{t−1} = μ + τ·σ·z   (z = 0 at t = 0; τ the low temperature, 0.5 in DD and WFDiffuser)

DDIM step (η = 0) from t to an earlier t' (ᾱ_{t'} = 1 past the end), with ε re-derived from the clipped x̂_0:

    x_{t'} = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'})·ε̃,   ε̃ = (x_t − √ᾱ_t·x̂_0)/√(1 − ᾱ_t)

Classifier-free guidance: ε̂ = ε_θ(x, ∅) + w·(ε_θ(x, y) − ε_θ(x, ∅)) (DD; w = 1.2 in the public code); the two passes
run as one batched forward. In-painting writes the known entries back after every step (and into the initial noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SAMPLERS", "Diffusion", "cosine_betas", "ddim_timesteps"]

SAMPLERS = ("ddpm", "ddim")

Bands = list[Tensor]
#: ``denoise(x_bands, t (B,)) -> ε̂ bands``; guidance and conditioning live inside it.
Denoiser = Callable[[Bands, Tensor], Bands]
#: ``inpaint(x_bands) -> x_bands`` with the known entries written back.
Inpaint = Callable[[Bands], Bands]


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """β_1..β_T of the cosine schedule (float64), as diffusers' ``betas_for_alpha_bar(..., "cosine")``."""
    if steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {steps}")

    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / steps) / abar(i / steps), max_beta) for i in range(steps)],
                        dtype=torch.float64)


def ddim_timesteps(train_steps: int, sample_steps: int) -> list[int]:
    """Descending timesteps of a ``sample_steps`` DDIM run: t = k·⌊T/n⌋ for k = n−1..0 (diffusers' "leading" spacing)."""
    if not 1 <= sample_steps <= train_steps:
        raise ValueError(f"sample steps must be in [1, {train_steps}] (the training steps), got {sample_steps}")
    stride = train_steps // sample_steps
    return [k * stride for k in reversed(range(sample_steps))]


@dataclass
class Diffusion:
    """Schedule buffers and the per-step math; stateless apart from the schedule."""

    steps: int = 200
    clip: float = 1.0  # |x̂_0| bound; 0 disables clipping

    def __post_init__(self) -> None:
        betas = cosine_betas(self.steps)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.betas = betas.float()
        self.alphas_cumprod = abar.float()
        self._coef_x0 = (abar_prev.sqrt() * betas / (1 - abar)).float()
        self._coef_xt = (alphas.sqrt() * (1 - abar_prev) / (1 - abar)).float()
        self._post_std = (betas * (1 - abar_prev) / (1 - abar)).clamp(min=1e-20).sqrt().float()

    # --- training -------------------------------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε for a batch of timesteps t (B,)."""
        a = _per_sample(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    # --- sampling ---------------------------------------------------------------------------------------------------
    def predict_x0(self, x: Tensor, t: Tensor, eps: Tensor, bound: Tensor | None = None) -> Tensor:
        """x̂_0 clipped to [−clip, clip], or to [−bound, bound] (broadcast against x) when a bound is given."""
        a = _per_sample(self.alphas_cumprod, t, x)
        x0 = (1 / a).sqrt() * x - (1 / a - 1).sqrt() * eps
        if bound is not None:
            return torch.maximum(torch.minimum(x0, bound), -bound)
        return x0.clamp(-self.clip, self.clip) if self.clip > 0 else x0

    def ddpm_step(self, x: Tensor, t: Tensor, eps: Tensor, noise: Tensor | None, temperature: float = 1.0,
                  bound: Tensor | None = None) -> Tensor:
        """One DDPM posterior step x_t → x_{t−1}; ``noise`` z ~ N(0, I) (ignored where t = 0)."""
        x0 = self.predict_x0(x, t, eps, bound)
        mean = _per_sample(self._coef_x0, t, x) * x0 + _per_sample(self._coef_xt, t, x) * x
        if noise is None or temperature == 0:
            return mean
        nonzero = (t > 0).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return mean + nonzero * temperature * _per_sample(self._post_std, t, x) * noise

    def ddim_step(self, x: Tensor, t: int, t_prev: int, eps: Tensor, bound: Tensor | None = None) -> Tensor:
        """One deterministic DDIM step t → t_prev (t_prev < 0: the end, ᾱ = 1)."""
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        a = self.alphas_cumprod[t].to(x)
        a_prev = self.alphas_cumprod[t_prev].to(x) if t_prev >= 0 else torch.ones((), dtype=x.dtype, device=x.device)
        x0 = self.predict_x0(x, tt, eps, bound)
        eps_c = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps_c

    def sample(self, denoise: Denoiser, shapes: Sequence[tuple[int, ...]], *, inpaint: Inpaint | None = None,
               sampler: str = "ddpm", sample_steps: int | None = None, temperature: float = 0.5,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu",
               bounds: Sequence[Tensor] | None = None) -> Bands:
        """Draw x_0 bands of the given shapes.

        ``ddpm``: all T steps, initial noise and step noise scaled by ``temperature`` (DD's low temperature).
        ``ddim``: ``sample_steps`` deterministic steps from ``temperature``·N(0, I) (the temperature scales only the
        start). ``inpaint`` is applied to the start and after every step. ``bounds`` (one per band, broadcast
        against it) replace the scalar ``clip`` of x̂_0.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        x = [temperature * torch.randn(s, generator=generator, device=device) for s in shapes]
        if inpaint is not None:
            x = inpaint(x)
        batch = shapes[0][0]
        bounds = list(bounds) if bounds is not None else [None] * len(shapes)
        if sampler == "ddpm":
            for i in reversed(range(self.steps)):
                t = torch.full((batch,), i, dtype=torch.long, device=device)
                eps = denoise(x, t)
                x = [self.ddpm_step(xk, t, ek, torch.randn(xk.shape, generator=generator, device=device), temperature,
                                    bk) for xk, ek, bk in zip(x, eps, bounds)]
                if inpaint is not None:
                    x = inpaint(x)
            return x
        ts = ddim_timesteps(self.steps, sample_steps or self.steps)
        for j, i in enumerate(ts):
            t = torch.full((batch,), i, dtype=torch.long, device=device)
            eps = denoise(x, t)
            t_prev = ts[j + 1] if j + 1 < len(ts) else -1
            x = [self.ddim_step(xk, i, t_prev, ek, bk) for xk, ek, bk in zip(x, eps, bounds)]
            if inpaint is not None:
                x = inpaint(x)
        return x


def _per_sample(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    return table.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))
