"""Scores and trajectory metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from wfdiffuser.metrics import (
    D4RL_REF_SCORES,
    frequency_shift,
    low_frequency_energy,
    mean_and_stderr,
    normalized_score,
    ref_scores_for,
    smoothness,
)


def test_normalized_score_uses_the_d4rl_constants() -> None:
    lo, hi = D4RL_REF_SCORES["hopper"]
    assert (lo, hi) == (-20.272305, 3234.3)  # d4rl/gym_mujoco/__init__.py
    assert normalized_score(lo, lo, hi) == pytest.approx(0.0)
    assert normalized_score(hi, lo, hi) == pytest.approx(100.0)
    # the card's Hopper-v5 round trip: a return of 1000 is 0.3135 of the way (Minari's fraction) = 31.35 here
    assert normalized_score(1000.0, lo, hi) == pytest.approx(31.35, abs=5e-3)
    assert ref_scores_for("HalfCheetah-v5") == (-280.178953, 12135.0)
    assert ref_scores_for("Walker2d-v5") == (1.629008, 4592.3)
    assert ref_scores_for("Pendulum-v1") is None
    assert ref_scores_for("Pendulum-v1", -1200.0, -150.0) == (-1200.0, -150.0)
    with pytest.raises(ValueError, match="ref_max > ref_min"):
        normalized_score(1.0, 5.0, 5.0)


def test_low_frequency_energy_of_a_pure_tone() -> None:
    L = 32
    t = np.arange(L)
    x = np.sin(2 * np.pi * 2 * t / L)[None, :, None]  # bin 2: |X_2| = L/2
    assert low_frequency_energy(x, bins=3) == pytest.approx((L / 2) ** 2)
    assert low_frequency_energy(x, bins=1) == pytest.approx(0.0, abs=1e-18)
    x_hi = np.sin(2 * np.pi * 8 * t / L)[None, :, None]
    assert low_frequency_energy(x_hi, bins=3) == pytest.approx(0.0, abs=1e-18)
    assert low_frequency_energy(x + 5.0, bins=3) == pytest.approx((L / 2) ** 2)  # the mean does not count


def test_frequency_shift_and_smoothness() -> None:
    L = 32
    t = np.arange(L)
    data = np.sin(2 * np.pi * t / L)[None, :, None]
    assert frequency_shift(data, data) == 0.0
    assert frequency_shift(1.5 * data, data) == pytest.approx(1.25)  # energy × 2.25
    line = np.arange(10.0)[None, :, None]
    assert smoothness(line) == 0.0
    zigzag = np.array([0.0, 1.0] * 5)[None, :, None]  # second differences ±2
    assert smoothness(zigzag) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="L >= 3"):
        smoothness(np.zeros((1, 2, 1)))


def test_mean_and_stderr() -> None:
    m, se = mean_and_stderr([1.0, 2.0, 3.0])
    assert m == 2.0 and se == pytest.approx(1.0 / np.sqrt(3))
    assert mean_and_stderr([4.0]) == (4.0, 0.0)
