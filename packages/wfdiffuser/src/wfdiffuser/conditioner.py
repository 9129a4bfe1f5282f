"""Cross-band conditioners: one (B, out_dim) vector per wavelet band, added to that band U-Net's embedding.

* ``StateEmbeddingConditioner``: the public code's ``Cross_Fourier_Fusion_Conditioner`` (card §3 items 1–4), written
  as the code does. Its inputs are the pad-1 Haar coefficients of the current state only, c_L = s_0/√2 and
  c_H = −s_0/√2 (B, 1, d_s); the FFT runs over an axis of length 1 (the identity, phase ∈ {0, π}) and the softmax runs
  over one key, so the attention weight is exactly 1 and ``cross_b = v(mlp_b(fourier_b(c_b)))``: a deterministic
  function of s_0, independent of the noisy sample and of t. The "cross-frequency interaction" is nominal.
* ``STFTCrossAttentionConditioner``: our reading of the paper's abstract (card §4): STFT features of each band's noisy
  coefficients → tokens → cross attention to the other bands → mean pool. It depends on x_i (and so on i) and must be
  recomputed at every denoising call.

Both expose ``out_dim``, ``n_bands`` and return a list ordered like ``DWT1d.forward`` ([low, high] for two bands).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wfdiffuser.stft import stft_feature_dim, stft_features, stft_frames

__all__ = ["FourierResidualMLP", "STFTCrossAttentionConditioner", "StateEmbeddingConditioner"]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class FourierResidualMLP(nn.Module):
    """The code's DFT_MLP_IDFT: X = FFT_axis1(x); X' = m(|X|)·exp(i·p(∠X)); out = Re(IFFT_axis1(X')) + x.

    m and p are MLPs d → hidden → d (ReLU) on the magnitude and the phase.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.magnitude_mlp = _mlp(dim, hidden, dim)
        self.phase_mlp = _mlp(dim, hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        spec = torch.fft.fft(x, dim=1)
        magnitude = self.magnitude_mlp(spec.abs())
        phase = self.phase_mlp(torch.angle(spec))
        mixed = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return torch.fft.ifft(mixed, dim=1).real + x


class StateEmbeddingConditioner(nn.Module):
    """Public code's conditioner (card §3): s_0 (B, d_s) → [cross_low, cross_high], each (B, dim).

    c_L = s_0/√2, c_H = −s_0/√2 (B, 1, d_s); f_b = band_mlp_b(fourier_b(c_b)) with band MLPs d_s → dim → hidden → dim;
    Q = q(f_H), K = k(f_L), V_b = v(f_b) (MLPs dim → hidden → dim, v shared); A = softmax(QKᵀ/√dim) over the single key
    (so A = 1); cross_b = A·V_b. One head, as in the code (dim 128, hidden 4·dim = 512).
    """

    n_bands = 2

    def __init__(self, obs_dim: int, dim: int = 128, hidden: int = 512) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("dim", dim), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.obs_dim = obs_dim
        self.dim = dim
        self.out_dim = dim
        self.fourier_low = FourierResidualMLP(obs_dim, hidden)
        self.fourier_high = FourierResidualMLP(obs_dim, hidden)
        self.low_mlp = nn.Sequential(nn.Linear(obs_dim, dim), nn.ReLU(), _mlp(dim, hidden, dim))
        self.high_mlp = nn.Sequential(nn.Linear(obs_dim, dim), nn.ReLU(), _mlp(dim, hidden, dim))
        self.query_proj = _mlp(dim, hidden, dim)
        self.key_proj = _mlp(dim, hidden, dim)
        self.value_proj = _mlp(dim, hidden, dim)

    def band_inputs(self, s0: Tensor) -> tuple[Tensor, Tensor]:
        """The pad-1 Haar pair of s_0 (card §3): c_L = s_0/√2, c_H = −s_0/√2, each (B, 1, d_s)."""
        if s0.ndim != 2 or s0.shape[1] != self.obs_dim:
            raise ValueError(f"s0 must have shape (B, {self.obs_dim}), got {tuple(s0.shape)}")
        c_low = (s0 / math.sqrt(2.0)).unsqueeze(1)
        return c_low, -c_low

    def attend(self, s0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (cross_low (B, dim), cross_high (B, dim), attention weights (B, 1, 1))."""
        c_low, c_high = self.band_inputs(s0)
        f_high = self.high_mlp(self.fourier_high(c_high))  # (B, 1, dim)
        f_low = self.low_mlp(self.fourier_low(c_low))
        q = self.query_proj(f_high)
        k = self.key_proj(f_low)
        scores = q @ k.transpose(1, 2) / math.sqrt(self.dim)  # (B, 1, 1): one query, one key
        probs = F.softmax(scores, dim=-1)
        cross_high = (probs @ self.value_proj(f_high)).squeeze(1)
        cross_low = (probs @ self.value_proj(f_low)).squeeze(1)
        return cross_low, cross_high, probs

    def forward(self, s0: Tensor) -> list[Tensor]:
        cross_low, cross_high, _ = self.attend(s0)
        return [cross_low, cross_high]


class STFTCrossAttentionConditioner(nn.Module):
    """Our STFT + cross-attention conditioner (card §4): bands [(B, L_b, C)] → [(B, dim)] per band.

    Per band b: tokens_b = Linear(stft_features(x_b)) + learned frame position (B, frames_b, dim). Band b queries the
    concatenated tokens of all other bands (two bands: low queries high, high queries low) with its own
    nn.MultiheadAttention; h_b = LayerNorm(tokens_b + attn_b); cross_b = Linear(mean over frames of h_b).

    Args:
        channels: C of each band (d_s).
        length: band length L (int, same for all bands) or one length per band.
        dim: token / output width (``out_dim``).
        n_fft, hop: STFT window and hop (defaults "assumed"; need n_fft//2 < every band length).
        heads: attention heads (must divide dim).
        phase: add cos/sin of the STFT phase to log1p|X|.
        n_bands: number of bands when ``length`` is an int (≥ 2).
    """

    def __init__(
        self,
        channels: int,
        length: int | Sequence[int],
        dim: int = 64,
        n_fft: int = 16,
        hop: int = 4,
        heads: int = 1,
        phase: bool = False,
        n_bands: int = 2,
    ) -> None:
        super().__init__()
        lengths = [int(length)] * n_bands if isinstance(length, int) else [int(n) for n in length]
        if len(lengths) < 2:
            raise ValueError(f"need at least 2 bands for cross attention, got lengths {lengths}")
        if not isinstance(length, int) and n_bands != 2 and n_bands != len(lengths):
            raise ValueError(f"n_bands={n_bands} disagrees with {len(lengths)} band lengths {lengths}")
        for name, value in (("channels", channels), ("dim", dim), ("heads", heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        self.frames = [stft_frames(n, n_fft, hop) for n in lengths]  # validates n_fft against every band length
        self.channels = channels
        self.lengths = lengths
        self.n_bands = len(lengths)
        self.dim = dim
        self.out_dim = dim
        self.n_fft = n_fft
        self.hop = hop
        self.phase = phase
        feat = stft_feature_dim(channels, n_fft, phase)
        self.proj = nn.ModuleList(nn.Linear(feat, dim) for _ in lengths)
        self.pos = nn.ParameterList(nn.Parameter(0.02 * torch.randn(f, dim)) for f in self.frames)
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True) for _ in lengths)
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in lengths)
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in lengths)

    def tokens(self, bands: Sequence[Tensor]) -> list[Tensor]:
        """STFT tokens per band, (B, frames_b, dim)."""
        if len(bands) != self.n_bands:
            raise ValueError(f"expected {self.n_bands} bands, got {len(bands)}")
        for b, (x, n) in enumerate(zip(bands, self.lengths, strict=True)):
            if x.ndim != 3 or x.shape[1:] != (n, self.channels):
                raise ValueError(f"bands[{b}] must have shape (B, {n}, {self.channels}), got {tuple(x.shape)}")
        return [
            proj(stft_features(x, self.n_fft, self.hop, self.phase)) + pos
            for x, proj, pos in zip(bands, self.proj, self.pos, strict=True)
        ]

    def forward(self, bands: Sequence[Tensor]) -> list[Tensor]:
        toks = self.tokens(bands)
        outs = []
        for b, tok in enumerate(toks):
            others = torch.cat([t for o, t in enumerate(toks) if o != b], dim=1)
            attended, _ = self.attn[b](tok, others, others, need_weights=False)
            h = self.norm[b](tok + attended)
            outs.append(self.out[b](h.mean(dim=1)))
        return outs
