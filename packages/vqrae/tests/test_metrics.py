"""Metrics against independent references: scikit-image (PSNR, SSIM), closed forms (Fréchet distance), hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from vqrae.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    linear_probe,
    mean_image_psnr,
    psnr,
    ssim,
)

SHAPES = [(32, 32), (11, 11), (24, 40), (48, 33)]


def _noisy_pair(shape: tuple[int, int], seed: int,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, *shape, generator=g, dtype=dtype)
    y = (x + 0.15 * torch.randn(x.shape, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


def _structured_pair(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gratings, a bright square and a gradient; the second image is a blurred, shifted, darkened copy."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grating = 0.5 + 0.5 * torch.sin(xx / 2.0) * torch.cos(yy / 3.0)
    square = ((yy > h // 4) & (yy < 3 * h // 4) & (xx > w // 4) & (xx < 3 * w // 4)).double()
    ramp = (xx + yy) / (h + w - 2)
    x = torch.stack([grating, square, ramp])[None]
    y = torch.roll(x, shifts=(1, 2), dims=(2, 3)) * 0.8 + 0.05
    y = torch.nn.functional.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
    return x, y


def _sk_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    return np.array([
        sk_ssim(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), data_range=data_range, channel_axis=-1,
                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for a, b in zip(x.double(), y.double(), strict=True)
    ])


# ---------------------------------------------------------------- PSNR


def test_psnr_constant_offset_is_20db() -> None:
    x = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-4)


def test_psnr_data_range_scales_peak() -> None:
    x = torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64)
    # R = 2 → 10·log10(4 / 0.01) = 20 + 20·log10(2) dB
    assert psnr(x, x + 0.1, data_range=2.0).item() == pytest.approx(20 + 20 * math.log10(2), abs=1e-9)


def test_psnr_identical_images_is_inf() -> None:
    x = torch.rand(2, 3, 8, 8)
    out = psnr(x, x)
    assert out.shape == (2,) and torch.isinf(out).all() and (out > 0).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_psnr_matches_skimage_per_image(shape: tuple[int, int]) -> None:
    x, y = _noisy_pair(shape, seed=1)
    ref = [sk_psnr(a.numpy(), b.numpy(), data_range=1.0) for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(psnr(x, y).numpy(), ref, rtol=0, atol=1e-9)


def test_psnr_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


# ---------------------------------------------------------------- SSIM


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_matches_skimage_random(shape: tuple[int, int]) -> None:
    x, y = _noisy_pair(shape, seed=2)
    ref = _sk_ssim(x, y)
    np.testing.assert_allclose(ssim(x, y).numpy(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ssim(x.float(), y.float()).double().numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_matches_skimage_structured(shape: tuple[int, int]) -> None:
    x, y = _structured_pair(shape)
    ref = _sk_ssim(x, y)
    assert 0.05 < ref[0] < 0.95  # a non-trivial value, so the comparison means something
    np.testing.assert_allclose(ssim(x, y).numpy(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ssim(x.float(), y.float()).double().numpy(), ref, rtol=0, atol=1e-5)


def test_ssim_data_range_matches_skimage() -> None:
    x, y = _noisy_pair((32, 32), seed=3)
    x, y = x * 255, y * 255
    np.testing.assert_allclose(ssim(x, y, data_range=255.0).numpy(), _sk_ssim(x, y, 255.0), rtol=0, atol=1e-10)


def test_ssim_identical_is_one() -> None:
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ssim(x, x), torch.ones(2), atol=1e-6, rtol=0)


def test_ssim_is_differentiable() -> None:
    x, y = _noisy_pair((32, 32), seed=4, dtype=torch.float32)
    x.requires_grad_(True)
    ssim(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ssim_too_small_raises() -> None:
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))


# ---------------------------------------------------------------- mean-image baseline


def test_mean_image_psnr_hand_value() -> None:
    train = torch.stack([torch.full((3, 4, 4), 0.2), torch.full((3, 4, 4), 0.4)])  # mean image 0.3
    test = torch.stack([torch.full((3, 4, 4), 0.4), torch.full((3, 4, 4), 0.5)])  # errors 0.1 and 0.2
    expected = (20.0 + 10 * math.log10(1 / 0.04)) / 2  # (20 + 13.979) / 2
    assert mean_image_psnr(train, test) == pytest.approx(expected, abs=1e-6)


def test_mean_image_psnr_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same"):
        mean_image_psnr(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 5))


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_diagonal_closed_form() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # diagonal: Tr(Σa + Σb − 2(ΣaΣb)^{1/2}) = Σ (√a − √b)²
    expected = float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2))
    got = frechet_distance_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb))
    assert got == pytest.approx(expected, abs=1e-10)
    assert expected == pytest.approx(7.25 + 4.0 + 1.0)


def test_frechet_one_dimensional_hand_case() -> None:
    a = np.array([[0.0], [2.0]])  # mean 1, sample variance 2
    b = np.array([[1.0], [3.0], [5.0]])  # mean 3, sample variance 4
    assert frechet_distance(a, b) == pytest.approx(4 + 2 + 4 - 2 * math.sqrt(8), abs=1e-12)


def test_feature_stats_sample_covariance() -> None:
    f = torch.tensor([[0.0, 1.0], [2.0, 5.0]])
    mu, sigma = feature_stats(f)
    np.testing.assert_allclose(mu, [1.0, 3.0])
    np.testing.assert_allclose(sigma, [[2.0, 4.0], [4.0, 8.0]])  # ddof = 1


def test_frechet_same_gaussian_is_near_zero_and_shift_is_seen() -> None:
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]])
    a = rng.multivariate_normal(np.zeros(3), cov, size=20000)
    b = rng.multivariate_normal(np.zeros(3), cov, size=20000)
    assert abs(frechet_distance(a, b)) < 0.01
    assert frechet_distance(a, b + np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0, abs=0.05)


def test_frechet_rejects_large_imaginary_part() -> None:
    # not a covariance: the square root of diag(1, −1) is diag(1, i)
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance_from_stats(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_feature_stats_needs_two_rows() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(np.zeros((1, 3)))


# ---------------------------------------------------------------- linear probe


def _clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = np.array([[4.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]])
    return centres[labels] + rng.normal(size=(n, 4)) * 0.5, labels


def test_linear_probe_separable_clusters() -> None:
    xtr, ytr = _clusters(300, 0)
    xte, yte = _clusters(300, 1)
    assert linear_probe(torch.from_numpy(xtr), torch.from_numpy(ytr), xte, yte) >= 0.99


def test_linear_probe_shuffled_labels_is_chance() -> None:
    rng = np.random.default_rng(2)
    xtr, xte = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    ytr, yte = rng.integers(0, 4, size=400), rng.integers(0, 4, size=400)
    assert linear_probe(xtr, ytr, xte, yte) < 0.4  # chance is 0.25


def test_linear_probe_standardises_tiny_scale_features() -> None:
    # the signal lives in a feature of scale 1e-4: without standardisation, C=1 regularisation would ignore it
    xtr, ytr = _clusters(300, 3)
    xte, yte = _clusters(300, 4)
    assert linear_probe(xtr * 1e-4, ytr, xte * 1e-4, yte) >= 0.99


def test_linear_probe_scaler_is_fit_on_train_only() -> None:
    # a shift of the test features alone must hurt; a scaler refit on the test set would undo it
    xtr, ytr = _clusters(300, 5)
    xte, yte = _clusters(300, 6)
    assert linear_probe(xtr, ytr, xte + np.array([40.0, 0.0, 0.0, 0.0]), yte) < 0.5
