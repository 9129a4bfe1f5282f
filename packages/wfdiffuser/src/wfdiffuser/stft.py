"""Short-time Fourier features of band coefficient sequences (card §4, our design; the public code has no STFT).

For each channel c of x (B, L, C): X_c[f, t] = Σ_n w[n]·x̃_c[t·hop + n]·exp(−2πi·f·n/n_fft), f = 0..n_fft//2, with the
periodic Hann window w[n] = ½ − ½·cos(2πn/n_fft) and x̃ the signal reflect-padded by n_fft//2 on both ends
(``torch.stft(center=True)``), giving 1 + L//hop frames. Features per frame: log1p|X| and, with ``phase=True``, also
cos φ and sin φ (φ = arg X; both 0 where |X| = 0), each flattened over (frequency, channel) with the channel fastest.
n_fft and hop defaults elsewhere are "assumed" (the paper does not state them).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["stft_feature_dim", "stft_features", "stft_frames"]


def _validate(length: int, n_fft: int, hop: int) -> None:
    if n_fft < 2:
        raise ValueError(f"n_fft={n_fft} must be ≥ 2")
    if hop < 1:
        raise ValueError(f"hop={hop} must be ≥ 1")
    if n_fft // 2 >= length:
        raise ValueError(
            f"n_fft={n_fft} is too long for sequences of length {length}: torch.stft(center=True) reflect-pads by "
            f"n_fft//2 = {n_fft // 2}, which must be < length; use n_fft ≤ {2 * length - 1} "
            f"(e.g. {_pow2_below(length)})"
        )


def _pow2_below(length: int) -> int:
    n = 2
    while n < length:  # next n = 2n still has n_fft//2 = n < length
        n *= 2
    return n


def stft_frames(length: int, n_fft: int, hop: int) -> int:
    """Number of STFT frames for a length-L sequence with center=True: 1 + L // hop."""
    _validate(length, n_fft, hop)
    return 1 + length // hop


def stft_feature_dim(channels: int, n_fft: int, phase: bool = False) -> int:
    """Features per frame: (n_fft//2 + 1)·C, times 3 with phase (log-magnitude, cos φ, sin φ)."""
    if channels < 1:
        raise ValueError(f"channels={channels} must be ≥ 1")
    return (n_fft // 2 + 1) * channels * (3 if phase else 1)


def stft_features(x: Tensor, n_fft: int, hop: int, phase: bool = False) -> Tensor:
    """x (B, L, C) → (B, frames, F): per-channel STFT (Hann, center=True), log1p|X| [, cos φ, sin φ] per frame."""
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, L, C), got {tuple(x.shape)}")
    b, length, c = x.shape
    _validate(length, n_fft, hop)
    sig = x.permute(0, 2, 1).reshape(b * c, length)
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(sig, n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    # spec: (B·C, freq, frames) → (B, frames, freq, C)
    spec = spec.reshape(b, c, spec.shape[-2], spec.shape[-1]).permute(0, 3, 2, 1)
    mag = spec.abs()
    feats = [torch.log1p(mag)]
    if phase:
        safe = torch.where(mag > 0, mag, torch.ones_like(mag))
        feats += [torch.where(mag > 0, spec.real / safe, 0.0), torch.where(mag > 0, spec.imag / safe, 0.0)]
    return torch.cat([f.flatten(2) for f in feats], dim=-1)
