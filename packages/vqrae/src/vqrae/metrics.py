"""Evaluation metrics for reconstructions and representations (card §5, §7).

    psnr(x, y)        = 10·log10(R² / MSE(x, y))                        per image, dB
    ssim(x, y)        = mean over pixels and channels of
                        (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))   (Wang et al. 2004)
    mean_image_psnr   = PSNR of predicting every test image by the per-pixel training mean (the floor to beat)
    frechet_distance  = ‖μa − μb‖² + Tr(Σa + Σb − 2(Σa·Σb)^{1/2})        (Dowson & Landau 1982)
    linear_probe      = test accuracy of a logistic regression on standardised frozen features

Naming: ``frechet_distance`` is "the Fréchet distance on <feature net> features" (e.g. "FD-digits"); it is **not** FID —
Inception weights are unavailable offline (card §7), so never report it under that name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "linear_probe",
    "mean_image_psnr",
    "psnr",
    "ssim",
]


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected images of shape (B, C, H, W), got {tuple(x.shape)}")


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, shape (B,), in dB.

    PSNR = 10·log10(R² / MSE), MSE averaged over C·H·W of each image, R = ``data_range`` (1 for images in [0, 1]).
    Identical images give MSE = 0 and PSNR = **+inf** (no cap, as ``skimage.metrics.peak_signal_noise_ratio``); average
    over a dataset only after checking for that case. Example: a constant offset of 0.1 gives 10·log10(1/0.01) = 20 dB.
    """
    _check_pair(x, y, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_taps(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """1-D Gaussian exp(−t²/2σ²), t = −radius … radius, normalised to sum 1 (as ``scipy.ndimage.gaussian_filter``)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image, shape (B,): Wang et al. 2004, channel-averaged; pure torch and differentiable.

    S = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), C1 = (0.01·R)², C2 = (0.03·R)², with local
    moments from an 11×11 Gaussian window (σ = 1.5, separable) and population (weighted, not n/(n−1)) covariance.

    Matches ``skimage.metrics.structural_similarity(a, b, data_range=R, channel_axis=-1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``. skimage filters the whole image with ``mode="reflect"`` (truncate 3.5 →
    radius 5) and then crops (win − 1)/2 = 5 pixels from every border before averaging; every retained pixel's window
    lies inside the image, so the padding never matters and a *valid* convolution (output (H−10)×(W−10)) gives exactly
    the same pixels. Images need H, W ≥ 11.
    """
    _check_pair(x, y, "ssim")
    b, c, h, w = x.shape
    win = 11
    if h < win or w < win:
        raise ValueError(f"ssim: images must be at least {win}×{win} (the Gaussian window), got {h}×{w}")
    if not x.is_floating_point():
        x, y = x.float(), y.float()
    g = _gaussian_taps(1.5, win // 2, x.dtype, x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    k = 5 * c
    stack = F.conv2d(stack, g.view(1, 1, win, 1).expand(k, 1, win, 1), groups=k)
    stack = F.conv2d(stack, g.view(1, 1, 1, win).expand(k, 1, 1, win), groups=k)
    mx, my, mxx, myy, mxy = stack.split(c, dim=1)
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def mean_image_psnr(train_images: Tensor, test_images: Tensor, data_range: float = 1.0) -> float:
    """Mean per-image PSNR of predicting every test image by the per-pixel mean of the training images.

    PSNR_mean = (1/N_test)·Σ_j psnr(m, y_j), m = (1/N_train)·Σ_i x_i. The baseline a reconstruction must beat: a
    decoder scoring at or below it has learnt nothing about the individual image. Images are (N, C, H, W).
    """
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"mean_image_psnr: train images {tuple(train_images.shape[1:])} and test images "
                         f"{tuple(test_images.shape[1:])} must have the same (C, H, W)")
    mean = train_images.double().mean(dim=0, keepdim=True).expand_as(test_images)
    return float(psnr(mean, test_images.double(), data_range).mean())


def _as_numpy64(feats: Any) -> np.ndarray:
    if isinstance(feats, Tensor):
        feats = feats.detach().cpu().double().numpy()
    return np.asarray(feats, dtype=np.float64)


def feature_stats(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of features (N, D) in float64; Σ is the sample covariance (ddof = 1, as pytorch-fid). Needs N ≥ 2."""
    f = _as_numpy64(feats)
    if f.ndim != 2:
        raise ValueError(f"feature_stats: features must be (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"feature_stats: need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray,
                                *, eps: float = 1e-6, imag_atol: float = 1e-3) -> float:
    """Fréchet distance between N(μa, Σa) and N(μb, Σb): ‖μa − μb‖² + Tr(Σa + Σb − 2(Σa·Σb)^{1/2}).

    (Σa·Σb)^{1/2} by ``scipy.linalg.sqrtm`` in float64. If it is not finite (near-singular product), Σa and Σb are
    offset by eps·I and it is recomputed. Round-off can give a complex root with tiny imaginary parts; they are
    discarded when the diagonal's imaginary parts are within ``imag_atol``, otherwise a ValueError is raised (the same rule as
    pytorch-fid's ``calculate_frechet_distance``, whose idea this follows; the formula is Dowson & Landau 1982).
    """
    from scipy import linalg

    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    sigma_a, sigma_b = np.atleast_2d(sigma_a).astype(np.float64), np.atleast_2d(sigma_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"frechet_distance: feature sizes differ: μ {mu_a.shape} vs {mu_b.shape}, "
                         f"Σ {sigma_a.shape} vs {sigma_b.shape}")
    covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if worst > imag_atol:
            raise ValueError(f"frechet_distance: sqrtm gave imaginary parts up to {worst:.3g} (> imag_atol="
                             f"{imag_atol}); the covariances are ill-conditioned — use more samples than dimensions")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance on <feature net> features between two feature sets (N, D); see ``frechet_distance_from_stats``.

    Report it named after the feature net ("FD-digits"), never as FID (card §7).
    """
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


def linear_probe(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any, *, c: float = 1.0,
                 max_iter: int = 2000) -> float:
    """Test accuracy of a linear probe: sklearn ``LogisticRegression(C=c)`` on standardised features.

    The ``StandardScaler`` is fit on the training features only and applied to both sets. Used to measure how much
    "understanding" the continuous encoder features keep after stage 2 (card §5 Table 6, §7).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, xte = _as_numpy64(train_feats), _as_numpy64(test_feats)
    ytr, yte = np.asarray(_labels(train_labels)), np.asarray(_labels(test_labels))
    if xtr.ndim != 2 or xte.ndim != 2:
        raise ValueError(f"linear_probe: features must be (N, D), got {xtr.shape} and {xte.shape}")
    if len(ytr) != len(xtr) or len(yte) != len(xte):
        raise ValueError(f"linear_probe: {len(xtr)}/{len(xte)} feature rows but {len(ytr)}/{len(yte)} labels")
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(xtr), ytr)
    return float(np.mean(clf.predict(scaler.transform(xte)) == yte))


def _labels(y: Any) -> Any:
    return y.detach().cpu().numpy() if isinstance(y, Tensor) else y

