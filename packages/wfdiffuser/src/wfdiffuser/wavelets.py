"""Differentiable 1-D discrete wavelet transform along time for trajectories (B, L, C) (card §3, §5).

Two families of modes:

* ``"haar_pad1"``: the public WFDiffuser code's transform (card §3). One Haar level on z = [0, x_0, …, x_{L−1}, 0]:
  ``low_k = (z_2k + z_2k+1)/√2``, ``high_k = (z_2k − z_2k+1)/√2``, k = 0..L//2, so each band has L//2 + 1 coefficients
  and the first pair is (x_0/√2, −x_0/√2). For even L it equals ``pywt.dwt(np.pad(x, 1), "haar")``. The inverse
  interleaves ``z_2k = (low_k + high_k)/√2``, ``z_2k+1 = (low_k − high_k)/√2`` and drops the leading pad; it is exact
  for every L (the public code's ``conv_transpose1d(padding=1)`` comes out one step short for odd L; ours does not).
* pywt modes ``"zero"``, ``"symmetric"``, ``"reflect"``, ``"periodization"``: any wavelet pywt knows and any number of
  levels, matching ``pywt.wavedec`` / ``pywt.waverec`` exactly. One analysis level computes
  ``cA_i = Σ_j dec_lo[j]·x̃[2i + s − j]`` (same with dec_hi for cD), x̃ the mode's extension of x, s = 1 and
  ``pywt.dwt_coeff_len(n, F, mode) = ⌊(n + F − 1)/2⌋`` outputs for the padded modes, s = F/2 and ⌈n/2⌉ outputs for
  periodization (odd n first repeats the last sample). Synthesis is the stride-2 transposed convolution with
  rec_lo/rec_hi, cropped to ``[F−2, 2n)`` (padded modes) or wrapped modulo 2n with offset F/2 − 1 (periodization).

Coefficients are ordered like ``pywt.wavedec``: [approximation at the coarsest level, detail level n, …,
detail level 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pywt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MODES", "DWT1d", "check_horizon", "valid_horizons"]

PYWT_MODES = ("zero", "symmetric", "reflect", "periodization")
MODES = ("haar_pad1", *PYWT_MODES)


def _extension_index(idx: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Map integer positions (any sign) of the extended signal to indices into x[0..n) and a validity mask."""
    if mode == "zero":
        valid = (idx >= 0) & (idx < n)
        return np.clip(idx, 0, n - 1), valid
    if mode == "periodization":
        return np.mod(idx, n), np.ones_like(idx, dtype=bool)
    if mode == "symmetric":  # half-sample symmetric: … x1 x0 | x0 x1 … x_{n-1} | x_{n-1} …
        k = np.mod(idx, 2 * n)
        return np.where(k >= n, 2 * n - 1 - k, k), np.ones_like(idx, dtype=bool)
    if mode == "reflect":  # whole-sample symmetric: … x2 x1 | x0 x1 … x_{n-1} | x_{n-2} …
        if n == 1:
            return np.zeros_like(idx), np.ones_like(idx, dtype=bool)
        k = np.mod(idx, 2 * n - 2)
        return np.where(k >= n, 2 * n - 2 - k, k), np.ones_like(idx, dtype=bool)
    raise ValueError(f"unknown extension mode {mode!r}")


class DWT1d(nn.Module):
    """Multi-level DWT/IDWT along the time axis of (B, L, C) tensors, differentiable (conv1d with stride 2).

    Args:
        wavelet: a pywt wavelet name ("haar", "db2", "sym4", "coif1", …); filters come from ``pywt.Wavelet``.
        levels: number of decomposition levels (≥ 1; exactly 1 for "haar_pad1").
        mode: one of ``MODES``; "haar_pad1" is the public code's form (card §3), the others match pywt.
    """

    def __init__(self, wavelet: str = "haar", levels: int = 1, mode: str = "haar_pad1") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not supported; choose one of {MODES}")
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels={levels!r} must be an integer ≥ 1")
        if mode == "haar_pad1" and (wavelet != "haar" or levels != 1):
            raise ValueError(
                f"mode='haar_pad1' is the public code's one-level Haar transform: use wavelet='haar', levels=1 "
                f"(got wavelet={wavelet!r}, levels={levels}); for other wavelets or levels use mode='zero', "
                "'symmetric', 'reflect' or 'periodization'"
            )
        try:
            w = pywt.Wavelet(wavelet)
        except ValueError as exc:
            raise ValueError(f"wavelet={wavelet!r} is not a discrete pywt wavelet ({exc}); e.g. 'haar', 'db2'") from exc
        self.wavelet = wavelet
        self.levels = levels
        self.mode = mode
        self.filter_len = int(w.dec_len)
        if w.rec_len != w.dec_len:
            raise ValueError(f"wavelet={wavelet!r} has unequal decomposition/reconstruction filter lengths")
        dec = torch.tensor(np.stack([w.dec_lo, w.dec_hi])[:, ::-1].copy(), dtype=torch.float64)  # flipped: conv1d
        rec = torch.tensor(np.stack([w.rec_lo, w.rec_hi]), dtype=torch.float64)
        # analysis weight (out=2, in=1, F); synthesis weight for conv_transpose1d (in=2, out=1, F)
        self.register_buffer("dec_filters", dec.unsqueeze(1), persistent=False)
        self.register_buffer("rec_filters", rec.unsqueeze(1), persistent=False)

    @property
    def n_bands(self) -> int:
        return self.levels + 1

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, levels={self.levels}, mode={self.mode!r}"

    # ------------------------------------------------------------------ lengths
    def band_lengths(self, length: int) -> list[int]:
        """Coefficient counts per band for a signal of ``length`` steps, in ``forward``'s order."""
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length={length!r} must be a positive integer")
        length = int(length)
        if self.mode == "haar_pad1":
            return [length // 2 + 1, length // 2 + 1]
        lens = []
        n = length
        for _ in range(self.levels):
            n = int(pywt.dwt_coeff_len(n, self.filter_len, self.mode))
            lens.append(n)
        return [lens[-1], *reversed(lens)]

    # ------------------------------------------------------------------ transforms
    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, L, C) → [approx (B, n_a, C), detail_level_n, …, detail_level_1], each (B, n_k, C)."""
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, L, C), got {tuple(x.shape)}")
        b, length, c = x.shape
        sig = x.permute(0, 2, 1).reshape(b * c, 1, length)
        if self.mode == "haar_pad1":
            low, high = self._analysis_haar_pad1(sig)
            return [self._to_blc(low, b, c), self._to_blc(high, b, c)]
        details = []
        a = sig
        for _ in range(self.levels):
            a, d = self._analysis(a)
            details.append(d)
        return [self._to_blc(a, b, c), *(self._to_blc(d, b, c) for d in reversed(details))]

    def inverse(self, coeffs: Sequence[Tensor], length: int) -> Tensor:
        """Invert ``forward``: coefficient list → x (B, length, C). Pads/extension samples are dropped."""
        if len(coeffs) != self.n_bands:
            raise ValueError(f"coeffs must hold {self.n_bands} bands (levels + 1), got {len(coeffs)}")
        for k, t in enumerate(coeffs):
            if t.ndim != 3:
                raise ValueError(f"coeffs[{k}] must have shape (B, n, C), got {tuple(t.shape)}")
        expected = self.band_lengths(length)
        got = [t.shape[1] for t in coeffs]
        if got != expected:
            raise ValueError(f"band lengths {got} do not match length={length} (expected {expected})")
        b, _, c = coeffs[0].shape
        bands = [t.permute(0, 2, 1).reshape(b * c, 1, t.shape[1]) for t in coeffs]
        if self.mode == "haar_pad1":
            z = self._synthesis_haar_pad1(bands[0], bands[1])
            out = z[..., 1 : 1 + length]
        else:
            a = bands[0]
            for d in bands[1:]:
                if a.shape[-1] == d.shape[-1] + 1:  # pywt.waverec's rule
                    a = a[..., :-1]
                a = self._synthesis(a, d)
            out = a[..., :length]
        return out.reshape(b, c, length).permute(0, 2, 1)

    # ------------------------------------------------------------------ kernels
    @staticmethod
    def _to_blc(t: Tensor, b: int, c: int) -> Tensor:
        return t.reshape(b, c, t.shape[-1]).permute(0, 2, 1)

    def _analysis_haar_pad1(self, sig: Tensor) -> tuple[Tensor, Tensor]:
        """low_k = (z_2k + z_2k+1)/√2, high_k = (z_2k − z_2k+1)/√2 on z = pad(x, 1); the code's conv1d(padding=1)."""
        r = 1.0 / math.sqrt(2.0)
        w = torch.tensor([[[r, r]], [[r, -r]]], dtype=sig.dtype, device=sig.device)
        y = F.conv1d(sig, w, stride=2, padding=1)
        return y[:, :1], y[:, 1:]

    def _synthesis_haar_pad1(self, low: Tensor, high: Tensor) -> Tensor:
        """z_2k = (low_k + high_k)/√2, z_2k+1 = (low_k − high_k)/√2 → z of length 2·n."""
        r = 1.0 / math.sqrt(2.0)
        even = (low + high) * r
        odd = (low - high) * r
        return torch.stack([even, odd], dim=-1).reshape(low.shape[0], 1, 2 * low.shape[-1])

    def _analysis(self, sig: Tensor) -> tuple[Tensor, Tensor]:
        """One pywt level: cA_i = Σ_j h[j]·x̃[2i + s − j] via gather-extension + conv1d(stride 2)."""
        n = sig.shape[-1]
        f = self.filter_len
        if self.mode == "periodization":
            if n % 2:
                sig = torch.cat([sig, sig[..., -1:]], dim=-1)
                n += 1
            n_out, s = n // 2, f // 2
        else:
            n_out, s = (n + f - 1) // 2, 1
        positions = np.arange(s - (f - 1), 2 * (n_out - 1) + s + 1)
        index, valid = _extension_index(positions, n, self.mode)
        ext = sig[..., torch.as_tensor(index, device=sig.device)]
        if not valid.all():
            ext = ext * torch.as_tensor(valid, dtype=sig.dtype, device=sig.device)
        y = F.conv1d(ext, self.dec_filters.to(device=sig.device, dtype=sig.dtype), stride=2)
        return y[:, :1], y[:, 1:]

    def _synthesis(self, a: Tensor, d: Tensor) -> Tensor:
        """One pywt inverse level: y[2k + j] = a_k·rec_lo[j] + d_k·rec_hi[j], then crop (or wrap) to 2n samples."""
        n = a.shape[-1]
        f = self.filter_len
        rec = self.rec_filters.to(device=a.device, dtype=a.dtype)
        y = F.conv_transpose1d(torch.cat([a, d], dim=1), rec, stride=2)  # length 2n − 2 + F
        if self.mode != "periodization":
            return y[..., f - 2 : 2 * n]
        target = torch.as_tensor(np.mod(np.arange(y.shape[-1]) - f // 2 + 1, 2 * n), device=a.device)
        out = torch.zeros(*y.shape[:-1], 2 * n, dtype=y.dtype, device=y.device)
        return out.index_add(-1, target, y)


# ---------------------------------------------------------------------- horizon rule (card §5)
def _horizon_ok(dwt: DWT1d, horizon: int, down_factor: int) -> bool:
    if dwt.mode == "haar_pad1" and horizon % 2:
        return False
    return all(n % down_factor == 0 for n in dwt.band_lengths(horizon))


def valid_horizons(dwt: DWT1d, down_factor: int, max_horizon: int = 512) -> list[int]:
    """All 2 ≤ H ≤ max_horizon accepted by ``check_horizon`` (band lengths divisible by ``down_factor``)."""
    if down_factor < 1:
        raise ValueError(f"down_factor={down_factor} must be ≥ 1")
    return [h for h in range(2, max_horizon + 1) if _horizon_ok(dwt, h, down_factor)]


def check_horizon(horizon: int, dwt: DWT1d, down_factor: int) -> list[int]:
    """Validate H for band U-Nets that downsample by ``down_factor``; return the band lengths (card §5).

    Each band length (``dwt.band_lengths(H)``) must be divisible by ``down_factor = 2**(len(dim_mults) − 1)``; for
    haar_pad1 and dim_mults (1, 4, 8) that is H//2 + 1 ≡ 0 (mod 4), i.e. H ≡ 6 (mod 8): 30, 62, 94, 126.
    haar_pad1 also requires an even H: our inverse is exact for odd H too, but the public code's inverse is one step
    short there and the pywt identity ``pywt.dwt(np.pad(x, 1), "haar")`` holds for even H only (card §3).
    Raises ValueError naming the nearest valid horizons.
    """
    if not isinstance(horizon, (int, np.integer)) or horizon < 2:
        raise ValueError(f"horizon={horizon!r} must be an integer ≥ 2")
    if down_factor < 1:
        raise ValueError(f"down_factor={down_factor} must be ≥ 1")
    lengths = dwt.band_lengths(int(horizon))
    if _horizon_ok(dwt, int(horizon), down_factor):
        return lengths
    search = 64 * down_factor
    below = next((h for h in range(horizon - 1, 1, -1) if _horizon_ok(dwt, h, down_factor)), None)
    above = next((h for h in range(horizon + 1, horizon + search + 1) if _horizon_ok(dwt, h, down_factor)), None)
    nearest = " or ".join(str(h) for h in (below, above) if h is not None) or (
        "none (this wavelet/mode/levels never gives such band lengths here; try mode='periodization' or fewer "
        "dim_mults)"
    )
    if all(n % down_factor == 0 for n in lengths):  # only haar_pad1's evenness failed
        problem = "haar_pad1 needs an even horizon (the pywt identity and the public code's inverse need it)"
    else:
        problem = (
            f"each must be divisible by {down_factor} = 2**(len(dim_mults) - 1) so the U-Net skip connections "
            "line up (card §5)"
        )
    raise ValueError(
        f"horizon={horizon} gives band lengths {lengths} ({dwt.extra_repr()}), but {problem}; "
        f"nearest valid horizon: {nearest}"
    )
