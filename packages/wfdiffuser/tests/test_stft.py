"""STFT features against hand-framed numpy FFTs (card §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wfdiffuser.stft import stft_feature_dim, stft_features, stft_frames


def _numpy_stft(sig: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hand framing: reflect-pad n_fft//2, periodic Hann window, rfft per frame → (frames, freq) complex."""
    padded = np.pad(sig, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    n_frames = 1 + (len(padded) - n_fft) // hop
    return np.stack([np.fft.rfft(window * padded[t * hop : t * hop + n_fft]) for t in range(n_frames)])


@pytest.mark.parametrize("phase", [False, True])
def test_matches_hand_framed_numpy(phase: bool) -> None:
    b, length, c, n_fft, hop = 2, 48, 3, 16, 4
    x = np.random.default_rng(0).standard_normal((b, length, c))
    feats = stft_features(torch.from_numpy(x), n_fft, hop, phase=phase).numpy()
    frames, n_freq = stft_frames(length, n_fft, hop), n_fft // 2 + 1
    assert frames == 13 and feats.shape == (b, frames, stft_feature_dim(c, n_fft, phase))
    for i in range(b):
        spec = np.stack([_numpy_stft(x[i, :, ch], n_fft, hop) for ch in range(c)], axis=-1)  # (frames, freq, C)
        expected = [np.log1p(np.abs(spec))]
        if phase:
            expected += [np.cos(np.angle(spec)), np.sin(np.angle(spec))]
        expected = np.concatenate([e.reshape(frames, n_freq * c) for e in expected], axis=-1)
        np.testing.assert_allclose(feats[i], expected, atol=1e-9)


def test_channel_is_fastest_in_flattening() -> None:
    x = torch.zeros(1, 20, 2, dtype=torch.float64)
    x[0, :, 1] = torch.randn(20, dtype=torch.float64)  # only channel 1 is non-zero
    feats = stft_features(x, 8, 2).reshape(1, 11, 5, 2)  # (B, frames, freq, C)
    assert torch.all(feats[..., 0] == 0) and torch.any(feats[..., 1] != 0)


def test_too_long_window_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"n_fft=16 is too long for sequences of length 8.*n_fft ≤ 15"):
        stft_features(torch.randn(1, 8, 2), 16, 4)
    assert stft_features(torch.randn(1, 9, 2), 16, 4).shape == (1, 3, 18)


def test_differentiable() -> None:
    x = torch.randn(1, 12, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: stft_features(t, 8, 2), (x,))
