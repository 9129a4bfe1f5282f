"""The three transition log-probabilities on a hand-computed distribution (mask_grpo.md §4)."""

from __future__ import annotations

import math

import pytest
import torch

from mask_grpo.logprobs import KINDS, step_terms, transition_log_prob

# five positions, K = 4; position 3 was unmasked before the step (contributes nothing)
P = torch.tensor([
    [0.50, 0.30, 0.15, 0.05],  # 0 committed, drew 0        -> 0.5
    [0.30, 0.30, 0.20, 0.20],  # 1 committed, drew 1        -> 0.3 = kappa (lowest committed)
    [0.40, 0.35, 0.20, 0.05],  # 2 re-masked, drew 2 (0.2); mass below 0.3 = 0.20 + 0.05
    [0.10, 0.20, 0.30, 0.40],  # 3 known
    [0.90, 0.04, 0.03, 0.03],  # 4 re-masked, drew 1 (0.04); mass below 0.3 = 0.04 + 0.03 + 0.03
])
DRAWN = torch.tensor([[0, 1, 2, 0, 1]])
MASKED = torch.tensor([[True, True, True, False, True]])
COMMITTED = torch.tensor([[True, True, False, False, False]])
KAPPA = torch.tensor([0.3])


def _lp(kind, kappa=KAPPA, p=P):
    return transition_log_prob(kind, p.log()[None], DRAWN, MASKED, COMMITTED, kappa).item()


def test_p2_is_committed_tokens_only():
    assert _lp("p2") == pytest.approx(math.log(0.5) + math.log(0.3), abs=1e-6)


def test_p1_adds_the_mass_below_the_float_threshold():
    expected = math.log(0.5) + math.log(0.3) + math.log(0.25) + math.log(0.10)
    assert _lp("p1") == pytest.approx(expected, abs=1e-6)
    # the re-mask factor is a proper log-mass strictly below 0 with 0 < kappa < 1
    assert _lp("p1") < _lp("p2") - 1.0


def test_ar_style_scores_every_drawn_masked_token():
    expected = math.log(0.5) + math.log(0.3) + math.log(0.2) + math.log(0.04)
    assert _lp("ar") == pytest.approx(expected, abs=1e-6)


def test_bool_threshold_of_the_released_code_collapses_p1_to_p2():
    """kappa stored in a bool buffer is True = 1.0: every token is below it, log 1 = 0 (card §8)."""
    assert _lp("p1", kappa=torch.tensor([True]).float()) == pytest.approx(_lp("p2"), abs=1e-6)


def test_empty_below_set_is_floored():
    uniform = torch.full((5, 4), 0.25)
    terms = step_terms(uniform.log()[None], DRAWN, MASKED, COMMITTED, torch.tensor([0.25]), floor=1e-12)
    # positions 2 and 4 are re-masked; no token has p < 0.25
    assert terms["remask_below"].item() == pytest.approx(2 * math.log(1e-12), rel=1e-6)


def test_gradient_flows_through_the_below_mass_not_the_set():
    logits = P.log()[None].clone().requires_grad_(True)
    lp = transition_log_prob("p1", logits, DRAWN, MASKED, COMMITTED, KAPPA)
    lp.backward()
    g = logits.grad[0]
    assert torch.all(g[3] == 0)  # a known position has no gradient
    # d/dl_k log sum_{j in S} softmax_j = 1[k in S]·p_k/mass − p_k  (position 2, S = {2, 3})
    p2 = P[2]
    s = torch.tensor([0.0, 0.0, 1.0, 1.0])
    expected = s * p2 / 0.25 - p2
    assert torch.allclose(g[2], expected, atol=1e-6)


def test_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match="p1"):
        _lp("p3")
    assert KINDS == ("p1", "p2", "ar")
