"""Flow-matching sigma schedules (spec card §3).

Convention: sampling runs σ = 1 → 0; every schedule here returns N + 1 float32 values σ_0 = 1 > … > σ_N = 0,
so step k goes σ_k → σ_{k+1} with Δ = σ_{k+1} − σ_k < 0. The transformer sees t = 1000·σ.

All three flow schedules start exactly at σ = 1, so the σ = 1 edge case of `sde.sde_step(kind="flow_grpo")`
always triggers on step 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NUM_TRAIN_TIMESTEPS",
    "dance_sigmas",
    "flux_image_seq_len",
    "flux_mu",
    "flux_sigmas",
    "sd3_sigmas",
    "shift_sigmas",
    "sigma_to_timestep",
]

NUM_TRAIN_TIMESTEPS = 1000
"""Training timesteps of the flow-matching schedulers (diffusers default); t = NUM_TRAIN_TIMESTEPS·σ."""


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")


def _check_shift(shift: float) -> None:
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")


def shift_sigmas(sigmas, shift: float):
    """Static time shift σ ↦ s·σ / (1 + (s − 1)·σ) (SD3 / SD3.5, DanceGRPO `sd3_time_shift`).

    Works on floats, numpy arrays and tensors (keeps the input's type and dtype). Fixes 0 and 1.
    """
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sd3_sigmas(num_steps: int, shift: float = 3.0) -> Tensor:
    """SD3 / SD3.5 schedule: N + 1 sigmas ending in 0, identical to diffusers'
    `FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(N).sigmas`.

    Recipe (diffusers `scheduling_flow_match_euler_discrete.py`): σ_min = shift(1/1000) in float32 (the
    scheduler's shifted training range), t = linspace(1, σ_min, N) in float64, σ = shift(t) (so the smallest
    nonzero sigma is shifted twice, as in diffusers), cast to float32, append 0. SD3.5-M uses shift 3.0.
    """
    _check_steps(num_steps)
    _check_shift(shift)
    sigma_min = shift_sigmas(torch.tensor(1.0, dtype=torch.float32) / NUM_TRAIN_TIMESTEPS, shift).item()
    t = np.linspace(1.0 * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, num_steps) / NUM_TRAIN_TIMESTEPS
    sigmas = torch.from_numpy(shift_sigmas(t, shift)).to(torch.float32)
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float32)])


def flux_image_seq_len(height: int, width: int, vae_scale_factor: int = 8) -> int:
    """Number of FLUX image tokens L = (H // (2f))·(W // (2f)): VAE factor f, then 2×2 latent packing.

    f = 8 for the FLUX VAE (2^(len(block_out_channels) − 1)); pass the real model's value. 512² → L = 1024.
    """
    for name, value in (("height", height), ("width", width), ("vae_scale_factor", vae_scale_factor)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return (height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor))


def flux_mu(
    image_seq_len: int,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> float:
    """Resolution-dependent shift μ = base + (max − base)·(L − L_base)/(L_max − L_base), linear in L.

    Evaluated as m·L + b exactly like diffusers' FluxPipeline `calculate_shift`, so the float is identical.
    512² on FLUX: L = 1024 → μ = 0.63.
    """
    if max_seq_len == base_seq_len:
        raise ValueError("max_seq_len must differ from base_seq_len")
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


def flux_sigmas(
    num_steps: int,
    image_seq_len: int,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> Tensor:
    """FLUX dynamic-shift schedule: σ = linspace(1, 1/N, N); μ = `flux_mu(L)`; σ ↦ e^μ / (e^μ + (1/σ − 1)); append 0.

    Identical to FluxPipeline + `FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)` (float32 math, as the
    scheduler casts the given sigmas to float32 before the exponential time shift).
    """
    _check_steps(num_steps)
    mu = flux_mu(image_seq_len, base_shift, max_shift, base_seq_len, max_seq_len)
    # numpy float32 on purpose: torch's `scalar / tensor` multiplies by a reciprocal and can differ by one ulp.
    sigmas = np.linspace(1.0, 1.0 / num_steps, num_steps).astype(np.float32)
    sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))
    return torch.cat([torch.from_numpy(sigmas).to(torch.float32), torch.zeros(1, dtype=torch.float32)])


def dance_sigmas(num_steps: int, shift: float = 3.0) -> Tensor:
    """DanceGRPO / GCPO schedule: σ_k = shift_s(1 − k/S), k = 0..S, shift_s(t) = s·t/(1 + (s − 1)·t).

    S + 1 float32 values from 1 to 0 (DanceGRPO: `sd3_time_shift(shift, torch.linspace(1, 0, S + 1))`).
    DanceGRPO feeds the model int(1000·σ)/1000; that rounding belongs to the model adapter, not here.
    """
    _check_steps(num_steps)
    _check_shift(shift)
    return shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32), shift)


def sigma_to_timestep(sigma):
    """Model timestep t = 1000·σ (diffusers flow-matching convention). Float in, float out; tensor in, tensor out."""
    return sigma * NUM_TRAIN_TIMESTEPS
