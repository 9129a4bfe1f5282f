"""Tests for slas.fisher_rao: the closed-form advantage-weighted Fisher–Rao step (card §5) against generic solvers
that never use it, hand values, γ = 0 → the χ² (linear) step, the link to the SLAS power map, and the edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from slas.fisher_rao import (
    advantage_weight,
    chi2_step,
    closed_form_step,
    max_interior_eta,
    project_simplex,
    solve_trust_region,
    trust_region_objective,
    weighted_baseline,
    weighted_divergence,
)
from slas.shaping import power

torch.set_num_threads(1)

F64 = torch.float64


def _policy(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pi_old = torch.softmax(1.5 * torch.randn(k, generator=gen, dtype=F64), 0)
    adv = torch.randn(k, generator=gen, dtype=F64)
    return pi_old, adv


def _small_eta(pi_old, adv, gamma):
    return 0.5 * min(max_interior_eta(pi_old, adv, gamma), 0.2)


CASES = [(k, gamma) for k in range(5, 11) for gamma in (0.0, 0.5, 1.0)]


# --- closed form vs generic optimisers ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["slsqp", "projected_gradient", "newton"])
def test_closed_form_matches_generic_solver(method):
    worst = 0.0
    for i, (k, gamma) in enumerate(CASES):
        pi_old, adv = _policy(k, seed=100 + i)
        eta = _small_eta(pi_old, adv, gamma)
        closed = closed_form_step(pi_old, adv, eta, gamma)
        assert (closed > 0).all() and abs(closed.sum().item() - 1.0) < 1e-14
        numeric = solve_trust_region(pi_old, adv, eta, gamma, method=method)
        worst = max(worst, (numeric - closed).abs().max().item())
        if gamma > 0:  # the weighting changes the step, so matching it is not trivial
            assert (closed - chi2_step(pi_old, adv, eta)).abs().max() > 1e-4
    assert worst < 1e-6, worst


def test_auto_method_is_slsqp():
    pi_old, adv = _policy(6, seed=1)
    eta = _small_eta(pi_old, adv, 1.0)
    auto = solve_trust_region(pi_old, adv, eta, 1.0)
    assert torch.equal(auto, solve_trust_region(pi_old, adv, eta, 1.0, method="slsqp"))


def test_closed_form_is_the_maximum_among_feasible_points():
    pi_old, adv = _policy(8, seed=2)
    gamma = 1.0
    eta = _small_eta(pi_old, adv, gamma)
    w = advantage_weight(adv, gamma)
    best = trust_region_objective(closed_form_step(pi_old, adv, eta, gamma), pi_old, adv, eta, w)
    gen = torch.Generator().manual_seed(3)
    for _ in range(200):
        d = torch.randn(8, generator=gen, dtype=F64) * 1e-3
        d -= d.mean()  # stay on Σπ = 1
        pi = closed_form_step(pi_old, adv, eta, gamma) + d
        assert trust_region_objective(pi, pi_old, adv, eta, w) < best
    # the unweighted χ² step is feasible but not optimal for the weighted objective
    assert trust_region_objective(chi2_step(pi_old, adv, eta), pi_old, adv, eta, w) < best - 1e-6


# --- hand values and γ = 0 ------------------------------------------------------------------------------------------


def test_hand_values():
    # π_old = [½, ½], A = [2, −1], η = 0.1
    pi_old = torch.tensor([0.5, 0.5], dtype=F64)
    adv = torch.tensor([2.0, -1.0], dtype=F64)
    # γ = 0: b = 0.5; π = ½·(1 + 0.1·(1.5, −1.5)) = [0.575, 0.425]
    torch.testing.assert_close(closed_form_step(pi_old, adv, 0.1, 0.0), torch.tensor([0.575, 0.425], dtype=F64))
    # γ = 1: w = [2, 1]; b_w = (½·2·2 − ½·1·1)/(½·2 + ½·1) = 1.5/1.5 = 1
    # π = ½·(1 + 0.1·2·(2 − 1)), ½·(1 + 0.1·1·(−1 − 1)) = [0.6, 0.4]
    w = advantage_weight(adv, 1.0)
    torch.testing.assert_close(w, torch.tensor([2.0, 1.0], dtype=F64))
    assert weighted_baseline(pi_old, adv, w).item() == pytest.approx(1.0)
    torch.testing.assert_close(closed_form_step(pi_old, adv, 0.1, 1.0), torch.tensor([0.6, 0.4], dtype=F64))
    # D_w of [0.6, 0.4] from [½, ½] with w = [2, 1]: ½·(0.01/(½·2) + 0.01/(½·1)) = 0.015; χ²: ½·(0.02 + 0.02) = 0.02
    pi = torch.tensor([0.6, 0.4], dtype=F64)
    assert weighted_divergence(pi, pi_old, w).item() == pytest.approx(0.015)
    assert weighted_divergence(pi, pi_old, torch.ones(2, dtype=F64)).item() == pytest.approx(0.02)
    # max_interior_eta: γ = 1 slope w·(A − b_w) = [2, −2] → η ≤ ½
    assert max_interior_eta(pi_old, adv, 1.0) == pytest.approx(0.5)
    assert max_interior_eta(torch.tensor([0.5, 0.5], dtype=F64), torch.zeros(2, dtype=F64)) == math.inf


def test_gamma0_is_the_plain_chi2_step():
    for i, k in enumerate(range(5, 11)):
        pi_old, adv = _policy(k, seed=200 + i)
        eta = _small_eta(pi_old, adv, 0.0)
        chi2 = chi2_step(pi_old, adv, eta)
        torch.testing.assert_close(closed_form_step(pi_old, adv, eta, 0.0), chi2, rtol=0, atol=1e-15)
        assert torch.equal(advantage_weight(adv, 0.0), torch.ones(k, dtype=F64))
        torch.testing.assert_close(solve_trust_region(pi_old, adv, eta, 0.0, method="projected_gradient"), chi2,
                                   rtol=0, atol=1e-6)
        # linear in A: doubling A doubles π − π_old
        torch.testing.assert_close(chi2_step(pi_old, 2 * adv, eta) - pi_old, 2 * (chi2 - pi_old), rtol=1e-12,
                                   atol=1e-15)


def test_batched_closed_form_matches_rows():
    rows = [_policy(6, seed=300 + i) for i in range(4)]
    pi_old = torch.stack([r[0] for r in rows])
    adv = torch.stack([r[1] for r in rows])
    batched = closed_form_step(pi_old, adv, 0.01, 0.5)
    for i in range(4):
        torch.testing.assert_close(batched[i], closed_form_step(pi_old[i], adv[i], 0.01, 0.5), rtol=0, atol=0)


# --- the link to the SLAS power map ---------------------------------------------------------------------------------


def _root_shift(pi_old, adv, gamma):
    """c with Σ π_old·p(A − c) = 0 (bisection; the sum decreases in c)."""
    lo, hi = adv.min().item(), adv.max().item()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (pi_old * power(adv - mid, gamma)).sum() > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_weighted_step_is_chi2_step_with_shaped_advantages(gamma):
    pi_old, adv = _policy(7, seed=400)
    eta = 0.01
    w = advantage_weight(adv, gamma)
    # always: the weighted step is the χ² step on the advantages w·(A − b_w)
    torch.testing.assert_close(closed_form_step(pi_old, adv, eta, gamma),
                               chi2_step(pi_old, w * (adv - weighted_baseline(pi_old, adv, w)), eta),
                               rtol=0, atol=1e-15)
    # with E_πold[p(A)] = 0 (b_w = 0) it is the χ² step on the SLAS map p(A) = sign(A)·|A|^(1+γ):
    # π/π_old − 1 = η·sign(A)·|A|^(1+γ), super-linear in A
    centred = adv - _root_shift(pi_old, adv, gamma)
    assert centred.abs().min() > 1e-3  # w_min does not bite
    step = closed_form_step(pi_old, centred, eta, gamma)
    torch.testing.assert_close(step, chi2_step(pi_old, power(centred, gamma), eta), rtol=0, atol=1e-12)
    torch.testing.assert_close(step / pi_old - 1, eta * power(centred, gamma), rtol=0, atol=1e-12)
    assert not torch.allclose(step, chi2_step(pi_old, centred, eta), rtol=0, atol=1e-6)  # not the linear step


# --- edge cases -----------------------------------------------------------------------------------------------------


def test_w_min_keeps_zero_advantage_actions_nearly_frozen():
    pi_old = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    adv = torch.tensor([0.0, 1.0, -0.8], dtype=F64)
    moves = []
    for w_min in (1e-1, 1e-2, 1e-3):
        pi = closed_form_step(pi_old, adv, 0.05, 1.0, w_min=w_min)
        moves.append(abs(pi[0] - pi_old[0]).item())
        numeric = solve_trust_region(pi_old, adv, 0.05, 1.0, w_min=w_min, method="newton")
        torch.testing.assert_close(numeric, pi, rtol=0, atol=1e-12)
    assert moves[0] > 5 * moves[1] > 25 * moves[2] > 0
    assert abs(closed_form_step(pi_old, adv, 0.05, 0.0)[0] - pi_old[0]) > 5e-4  # without weighting it moves (by 1e-3)


def test_outside_the_interior_the_closed_form_is_not_the_solution():
    pi_old, adv = _policy(6, seed=500)
    gamma = 1.0
    eta = 2.0 * max_interior_eta(pi_old, adv, gamma)
    closed = closed_form_step(pi_old, adv, eta, gamma)
    assert (closed < 0).any()
    pg = solve_trust_region(pi_old, adv, eta, gamma, method="projected_gradient")
    assert (pg >= 0).all() and abs(pg.sum().item() - 1) < 1e-12
    assert (pg - closed).abs().max() > 1e-3
    torch.testing.assert_close(solve_trust_region(pi_old, adv, eta, gamma, method="slsqp"), pg, rtol=0, atol=1e-6)
    # without π ≥ 0 the closed form is again the optimum
    unconstrained = solve_trust_region(pi_old, adv, eta, gamma, method="newton", nonnegative=False)
    torch.testing.assert_close(unconstrained, closed, rtol=0, atol=1e-12)
    hyperplane = solve_trust_region(pi_old, adv, eta, gamma, method="projected_gradient", nonnegative=False)
    torch.testing.assert_close(hyperplane, closed, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="negative"):
        solve_trust_region(pi_old, adv, eta, gamma, method="newton")
    # at exactly η_max one entry touches 0
    edge = closed_form_step(pi_old, adv, max_interior_eta(pi_old, adv, gamma), gamma)
    assert edge.min().abs() < 1e-15 and (edge > -1e-15).all()


def test_project_simplex_hand_values():
    torch.testing.assert_close(project_simplex(torch.tensor([0.5, 0.5, 0.5], dtype=F64)),
                               torch.full((3,), 1 / 3, dtype=F64))
    torch.testing.assert_close(project_simplex(torch.tensor([2.0, 0.0, 0.0], dtype=F64)),
                               torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(project_simplex(torch.tensor([0.6, 0.6, -1.0], dtype=F64)),
                               torch.tensor([0.5, 0.5, 0.0], dtype=F64))
    p = torch.tensor([0.1, 0.2, 0.7], dtype=F64)
    torch.testing.assert_close(project_simplex(p), p, rtol=0, atol=1e-15)


def test_validation():
    pi_old = torch.tensor([0.5, 0.5], dtype=F64)
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    with pytest.raises(ValueError, match="sum to 1"):
        closed_form_step(torch.tensor([0.5, 0.6]), adv, 0.1)
    with pytest.raises(ValueError, match="> 0"):
        closed_form_step(torch.tensor([1.0, 0.0]), adv, 0.1)
    with pytest.raises(ValueError, match="shape"):
        closed_form_step(pi_old, torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="eta"):
        closed_form_step(pi_old, adv, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        closed_form_step(pi_old, adv, 0.1, -1.0)
    with pytest.raises(ValueError, match="w_min"):
        closed_form_step(pi_old, adv, 0.1, 1.0, w_min=0.0)
    with pytest.raises(ValueError, match="method"):
        solve_trust_region(pi_old, adv, 0.1, method="lbfgs")
    with pytest.raises(ValueError, match="one state"):
        solve_trust_region(pi_old[None], adv[None], 0.1)
