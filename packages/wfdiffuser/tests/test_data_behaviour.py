"""Scripted controllers and seeded collection (card §10)."""

from __future__ import annotations

import numpy as np
import pytest

from wfdiffuser.data import OFFLINE_DATASETS, NoiseLevel, collect_episodes, pendulum_swing_up


def test_pendulum_controller_formulas():
    # near the top: PD −(12θ + 2.5θ̇); θ = 0.1, θ̇ = −0.2 → −(1.2 − 0.5) = −0.7
    np.testing.assert_allclose(pendulum_swing_up(np.array([np.cos(0.1), np.sin(0.1), -0.2])), [-0.7], rtol=1e-5)
    # hanging, moving: E = ½·1 − 15 < 15 → pump along θ̇ with full torque
    assert pendulum_swing_up(np.array([-1.0, 0.0, 1.0]))[0] == 2.0
    assert pendulum_swing_up(np.array([-1.0, 0.0, -1.0]))[0] == -2.0


def test_swing_up_beats_random_by_a_wide_margin():
    expert = collect_episodes("Pendulum-v1", "pendulum_swing_up", [NoiseLevel(0.0, 0.0)], 3, 0, 200)
    rand = collect_episodes("Pendulum-v1", None, [NoiseLevel(0.0, 1.0)], 3, 0, 200)
    r_e, r_r = np.mean([e.ret for e in expert]), np.mean([e.ret for e in rand])
    assert all(e.length == 200 and e.truncations[-1] and not e.terminations.any() for e in expert)
    assert r_e > -400 and r_r < -700 and r_e - r_r > 500, (r_e, r_r)


def test_inverted_pendulum_pd_balances_to_the_cap():
    eps = collect_episodes("InvertedPendulum-v5", "inverted_pendulum_pd", [NoiseLevel(0.0, 0.0)], 1, 0, 200)
    assert eps[0].length == 200 and eps[0].ret == 200.0 and eps[0].truncations[-1] and not eps[0].terminated
    rand = collect_episodes("InvertedPendulum-v5", "random", [NoiseLevel(0.0, 1.0)], 2, 0, 200)
    assert all(e.terminated and e.length < 50 for e in rand)


def test_collection_is_deterministic_for_a_seed():
    levels = [NoiseLevel(1.0, 0.5), NoiseLevel(0.3, 0.0)]
    a = collect_episodes("Pendulum-v1", "pendulum_swing_up", levels, 2, 3, 30)
    b = collect_episodes("Pendulum-v1", "pendulum_swing_up", levels, 2, 3, 30)
    c = collect_episodes("Pendulum-v1", "pendulum_swing_up", levels, 2, 4, 30)
    assert len(a) == 4 and [e.seed for e in a] == [3, 4, 5, 6]
    assert all(x.equals(y) for x, y in zip(a, b))
    assert not a[0].equals(c[0])
    assert all(np.abs(e.actions).max() <= 2.0 for e in a)  # clipped to the action box


def test_noise_level_changes_behaviour_and_is_validated():
    clean = collect_episodes("Pendulum-v1", "pendulum_swing_up", [NoiseLevel(0.0, 0.0)], 1, 0, 30)[0]
    noisy = collect_episodes("Pendulum-v1", "pendulum_swing_up", [NoiseLevel(0.5, 0.0)], 1, 0, 30)[0]
    np.testing.assert_array_equal(clean.observations[0], noisy.observations[0])  # same reset seed
    assert not np.allclose(clean.actions, noisy.actions)
    with pytest.raises(ValueError, match="eps"):
        NoiseLevel(0.1, 1.5)
    with pytest.raises(ValueError, match="unknown controller"):
        collect_episodes("Pendulum-v1", "lqr", [NoiseLevel(0.0, 0.0)], 1, 0, 10)


def test_registry_recipes():
    pend = OFFLINE_DATASETS["wfdiffuser/pendulum/mixed-v0"]
    assert pend.env_id == "Pendulum-v1" and pend.max_steps == 200 and pend.n_episodes == 100
    assert [lv.eps for lv in pend.levels] == [1.0, 0.8, 0.6, 0.4, 0.2] and {lv.sigma for lv in pend.levels} == {1.0}
    ip = OFFLINE_DATASETS["wfdiffuser/inverted-pendulum/mixed-v0"]
    assert ip.env_id == "InvertedPendulum-v5" and ip.max_steps == 200


def test_per_level_controller_and_the_spinner():
    from wfdiffuser.data.behaviour import pendulum_spin

    # hanging at rest: E = −15 < 20 → pump with full torque (direction + at θ̇ = 0); upright and fast: E > 20 → brake
    assert pendulum_spin(np.array([-1.0, 0.0, 0.0]))[0] == 2.0
    assert pendulum_spin(np.array([-1.0, 0.0, -1.0]))[0] == -2.0
    assert pendulum_spin(np.array([1.0, 0.0, 4.0]))[0] == -2.0  # E = 8 + 15 = 23
    levels = [NoiseLevel(0.0, 0.0, "pendulum_spin"), NoiseLevel(0.0, 0.0)]
    spin, swing = collect_episodes("Pendulum-v1", "pendulum_swing_up", levels, 1, 0, 200)
    # the level's controller drove its episode exactly (no noise)
    np.testing.assert_array_equal(spin.actions, np.stack([pendulum_spin(o) for o in spin.observations[:-1]]))
    theta = np.unwrap(np.arctan2(spin.observations[:, 1], spin.observations[:, 0]))
    assert abs(theta[-1] - theta[0]) > 4 * np.pi  # goes over the top again and again
    assert spin.ret < -900 and swing.ret > -400, (spin.ret, swing.ret)
    with pytest.raises(ValueError, match="unknown controller 'lqr'"):
        collect_episodes("Pendulum-v1", "pendulum_swing_up", [NoiseLevel(0.0, 0.0, "lqr")], 1, 0, 10)


def test_multi_policy_recipe_mixes_two_behaviours():
    spec = OFFLINE_DATASETS["wfdiffuser/pendulum/multi-v0"]
    assert spec.n_episodes == 80 and spec.max_steps == 200
    assert [lv.controller for lv in spec.levels].count("pendulum_spin") == 2
