"""Normalisers: round trips, known maps (uniform data → straight line), constant dims, numpy/torch parity, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wfdiffuser.data.normalizers import (
    NORMALIZERS,
    CDFNormalizer,
    GaussianNormalizer,
    LimitsNormalizer,
    build_normalizer,
    normalizer_from_state,
)


def _data(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(3.0, 2.0, n), rng.exponential(1.0, n), rng.uniform(-5, 5, n)], axis=1)


@pytest.mark.parametrize("kind", NORMALIZERS)
def test_round_trip_numpy_and_torch(kind):
    x = _data()
    norm = build_normalizer(kind, x)
    z = norm.normalize(x)
    assert isinstance(z, np.ndarray) and z.dtype == np.float64 and z.shape == x.shape
    np.testing.assert_allclose(norm.unnormalize(z), x, atol=1e-9)
    xt = torch.tensor(x[:12].reshape(3, 4, 3), dtype=torch.float64)  # any leading dims
    zt = norm.normalize(xt)
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float64 and zt.shape == (3, 4, 3)
    np.testing.assert_allclose(zt.numpy().reshape(12, 3), z[:12], atol=1e-12)
    np.testing.assert_allclose(norm.unnormalize(zt).numpy(), xt.numpy(), atol=1e-9)
    assert norm.normalize(x.astype(np.float32)).dtype == np.float32


def test_gaussian_and_limits_formulas():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    g = GaussianNormalizer.fit(x)
    np.testing.assert_allclose(g.normalize(x)[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])  # std = sqrt(8/3)
    lim = LimitsNormalizer.fit(x)
    np.testing.assert_allclose(lim.normalize(np.array([[0.0, 1.0], [1.0, 1.0], [4.0, 1.0]])),
                               [[-1.0, 0.0], [-0.5, 0.0], [1.0, 0.0]])  # constant dim → 0
    np.testing.assert_allclose(lim.unnormalize(np.zeros((1, 2))), [[2.0, 1.0]])


def test_cdf_of_uniform_data_is_a_straight_line():
    x = np.linspace(0.0, 1.0, 1001)[:, None]  # F̂(q_j) = (j + 1)/1001
    z = CDFNormalizer.fit(x).normalize(x)[:, 0]
    np.testing.assert_allclose(z, 2 * np.arange(1, 1002) / 1001 - 1, atol=1e-12)
    rng = np.random.default_rng(1)
    u = rng.uniform(-2.0, 3.0, (20000, 1))
    norm = CDFNormalizer.fit(u)
    grid = np.linspace(-1.9, 2.9, 50)[:, None]
    np.testing.assert_allclose(norm.normalize(grid)[:, 0], 2 * (grid[:, 0] + 2) / 5 - 1, atol=0.03)


def test_cdf_of_gaussian_follows_erf_and_clips():
    from math import erf, sqrt

    x = np.random.default_rng(2).normal(0.0, 1.0, (20000, 1))
    norm = CDFNormalizer.fit(x)
    grid = np.array([-1.5, -0.5, 0.0, 0.7, 1.2])
    expected = np.array([erf(v / sqrt(2)) for v in grid])  # 2Φ(v) − 1
    np.testing.assert_allclose(norm.normalize(grid[:, None])[:, 0], expected, atol=0.03)
    z = norm.normalize(np.array([[-100.0], [100.0]]))[:, 0]
    assert z[0] == pytest.approx(2 / 20000 - 1) and z[1] == pytest.approx(1.0)  # DD: clip to the fitted range
    assert norm.unnormalize(np.array([[1.5]]))[0, 0] == pytest.approx(x.max())


def test_cdf_constant_dim_and_ties():
    x = np.array([[5.0, 0.0], [5.0, 0.0], [5.0, 1.0], [5.0, 1.0]])
    norm = CDFNormalizer.fit(x)
    z = norm.normalize(x)
    np.testing.assert_allclose(z[:, 0], 0.0)  # constant → 0 and back to the constant
    np.testing.assert_allclose(z[:, 1], [0.0, 0.0, 1.0, 1.0])  # F̂ = 1/2, 1 at the two ties
    np.testing.assert_allclose(norm.unnormalize(z), x)
    np.testing.assert_allclose(norm.unnormalize(torch.zeros(2, 2)).numpy(), [[5.0, 0.0], [5.0, 0.0]])


def test_cdf_max_knots_keeps_ends_and_approximates():
    x = np.random.default_rng(3).normal(size=(5000, 2))
    full, small = CDFNormalizer.fit(x, max_knots=None), CDFNormalizer.fit(x, max_knots=64)
    assert len(full.quantiles[0]) == 5000 and len(small.quantiles[0]) == 64
    assert small.quantiles[0][0] == x[:, 0].min() and small.quantiles[0][-1] == x[:, 0].max()
    np.testing.assert_allclose(small.normalize(x), full.normalize(x), atol=0.05)


@pytest.mark.parametrize("kind", NORMALIZERS)
def test_state_dict_round_trip_plain_lists(kind):
    x = _data(200)
    norm = build_normalizer(kind, x)
    state = norm.state_dict()
    import json

    restored = normalizer_from_state(json.loads(json.dumps(state)))  # plain lists only
    assert type(restored) is type(norm)
    np.testing.assert_array_equal(restored.normalize(x), norm.normalize(x))


def test_torch_gradients_flow_through_cdf_inverse():
    norm = CDFNormalizer.fit(_data(300))
    z = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    norm.unnormalize(z).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad > 0).all()


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown normaliser"):
        build_normalizer("minmax", _data())
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        build_normalizer("limits", np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        build_normalizer("gaussian", np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match="last axis must have 3"):
        build_normalizer("limits", _data()).normalize(np.zeros((2, 4)))
