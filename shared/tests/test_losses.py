"""Tests for shared.losses: hand-computed numbers, gradients, masks and Monte-Carlo KL checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from shared.losses import VERL_KL_CLAMP, aggregate, clipped_surrogate, gaussian_mean_kl, kl_estimator
from shared.sde import sde_step

# --- aggregation --------------------------------------------------------------------------------------

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # L = [2, 1]


def test_aggregations_on_uneven_mask():
    # token_mean: (1 + 2 + 4)/3 = 7/3
    assert aggregate(VALUES, MASK, "token_mean").item() == pytest.approx(7 / 3)
    # seq_mean_token_mean: ((1 + 2)/2 + 4/1)/2 = 2.75
    assert aggregate(VALUES, MASK, "seq_mean_token_mean").item() == pytest.approx(2.75)
    # seq_mean_token_sum_norm, L_max = 4: (3 + 4)/(2·4) = 0.875
    assert aggregate(VALUES, MASK, "seq_mean_token_sum_norm", max_length=4).item() == pytest.approx(0.875)
    # no mask: all three reduce to the plain mean when L_max = T
    for mode in ("token_mean", "seq_mean_token_mean"):
        assert aggregate(VALUES, None, mode).item() == pytest.approx(3.5)
    assert aggregate(VALUES, None, "seq_mean_token_sum_norm", max_length=3).item() == pytest.approx(3.5)
    # (B,) values: one unit per sample
    assert aggregate(torch.tensor([1.0, 3.0]), None, "seq_mean_token_mean").item() == pytest.approx(2.0)


def test_aggregate_ignores_padding_and_empty_rows():
    values = VALUES.clone()
    values[0, 2] = float("nan")
    values[1, 1] = float("inf")
    assert aggregate(values, MASK, "token_mean").item() == pytest.approx(7 / 3)
    empty = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert aggregate(VALUES, empty, "seq_mean_token_mean").item() == pytest.approx(1.5 / 2)  # (1.5 + 0)/2
    assert aggregate(VALUES, torch.zeros(2, 3), "token_mean").item() == 0.0


def test_aggregate_errors():
    with pytest.raises(ValueError, match="mode"):
        aggregate(VALUES, MASK, "sum")
    with pytest.raises(ValueError, match="max_length"):
        aggregate(VALUES, MASK, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="max_length"):
        aggregate(VALUES, MASK, "seq_mean_token_sum_norm", max_length=2)  # shorter than T = 3
    with pytest.raises(ValueError, match="mask"):
        aggregate(VALUES, torch.ones(2, 2), "token_mean")


# --- clipped surrogate -------------------------------------------------------------------------------

RATIOS = torch.tensor([1.3, 0.7, 0.7, 1.5])
ADV = torch.tensor([1.0, 1.0, -1.0, -1.0])


def test_clipped_surrogate_hand_values_and_gradients():
    log_prob = torch.log(RATIOS).requires_grad_(True)
    out = clipped_surrogate(log_prob, torch.zeros(4), ADV, clip_low=0.2)
    # per unit max(−A·r, −A·clip(r, 0.8, 1.2)):
    #   r = 1.3, A = +1: max(−1.3, −1.2) = −1.2  (clipped)
    #   r = 0.7, A = +1: max(−0.7, −0.8) = −0.7
    #   r = 0.7, A = −1: max( 0.7,  0.8) =  0.8  (clipped)
    #   r = 1.5, A = −1: max( 1.5,  1.2) =  1.5
    # mean = (−1.2 − 0.7 + 0.8 + 1.5)/4 = 0.1
    assert out.loss.item() == pytest.approx(0.1, abs=1e-6)
    out.loss.backward()
    # ∂ℓ/∂log p = −A·r on the unclipped side, 0 on the clipped side; ÷ 4 from the mean
    torch.testing.assert_close(log_prob.grad, torch.tensor([0.0, -0.7 / 4, 0.0, 1.5 / 4]))
    assert out.metrics["clipfrac_low"] == pytest.approx(0.5)  # 0.7, 0.7 < 0.8
    assert out.metrics["clipfrac_high"] == pytest.approx(0.5)  # 1.3, 1.5 > 1.2
    assert out.metrics["ratio_mean"] == pytest.approx(1.05)
    assert out.metrics["ratio_min"] == pytest.approx(0.7) and out.metrics["ratio_max"] == pytest.approx(1.5)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in (1.3, 0.7, 0.7, 1.5)) / 4
    assert out.metrics["approx_kl"] == pytest.approx(expected_kl, rel=1e-5)


def test_asymmetric_clip_and_on_policy_ratio():
    # clip_high = 0.6 lets r = 1.3 through: −1.3 instead of −1.2 → mean (−1.3 − 0.7 + 0.8 + 1.5)/4 = 0.075
    out = clipped_surrogate(torch.log(RATIOS), torch.zeros(4), ADV, clip_low=0.2, clip_high=0.6)
    assert out.loss.item() == pytest.approx(0.075, abs=1e-6)
    assert out.metrics["clipfrac_high"] == pytest.approx(0.0)
    # on-policy: r ≡ 1, loss = −mean(A), gradient = −A/B
    lp = torch.randn(4).requires_grad_(True)
    out = clipped_surrogate(lp, lp.detach().clone(), ADV)
    assert out.metrics["ratio_min"] == out.metrics["ratio_max"] == 1.0
    assert out.loss.item() == pytest.approx(0.0)
    out.loss.backward()
    torch.testing.assert_close(lp.grad, -ADV / 4)


def test_dual_clip():
    # r = 4, A = −1: ℓ = max(4, 1.2) = 4; dual clip c = 3: min(4, 3·1) = 3. A > 0 units are untouched.
    lp = torch.log(torch.tensor([4.0, 4.0])).requires_grad_(True)
    adv = torch.tensor([-1.0, 1.0])
    plain = clipped_surrogate(lp, torch.zeros(2), adv, clip_low=0.2)
    assert plain.loss.item() == pytest.approx((4.0 - 1.2) / 2)
    dual = clipped_surrogate(lp, torch.zeros(2), adv, clip_low=0.2, dual_clip=3.0)
    assert dual.loss.item() == pytest.approx((3.0 - 1.2) / 2)
    assert dual.metrics["dual_clipfrac"] == pytest.approx(0.5)
    dual.loss.backward()
    torch.testing.assert_close(lp.grad, torch.zeros(2))  # both sides clipped


def test_token_level_with_mask_and_per_token_advantages():
    lp = torch.tensor([[0.1, 0.3, 9.0], [-0.2, 5.0, -7.0]], requires_grad=True)
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    out = clipped_surrogate(lp, old, adv, clip_low=0.5, clip_high=10.0, mask=mask)  # no clipping here
    # seq 0: −(e^0.1 + e^0.3)/2; seq 1: 2·e^−0.2 / 1; mean over 2 sequences
    expected = (-(math.exp(0.1) + math.exp(0.3)) / 2 + 2 * math.exp(-0.2)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    out.loss.backward()
    assert lp.grad[0, 2].item() == 0.0 and lp.grad[1, 1].item() == 0.0 and lp.grad[1, 2].item() == 0.0
    assert lp.grad[0, 0].item() == pytest.approx(-math.exp(0.1) / 4, rel=1e-6)
    # the same advantages given per token
    out2 = clipped_surrogate(lp.detach(), old, adv[:, None].expand(2, 3), clip_low=0.5, clip_high=10.0, mask=mask)
    assert out2.loss.item() == pytest.approx(expected, rel=1e-6)
    # padding with garbage does not leak into the metrics either
    assert out.metrics["ratio_max"] == pytest.approx(math.exp(0.3), rel=1e-6)


def test_sequence_level_ratio_is_geometric_mean():
    lp = torch.tensor([[0.1, 0.3, 9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    out = clipped_surrogate(lp, torch.zeros(1, 3), torch.tensor([1.0]), clip_low=0.5, clip_high=10.0, mask=mask,
                            ratio_level="sequence")
    # s = exp((0.1 + 0.3)/2) = e^0.2 broadcast over 2 active tokens: loss = −e^0.2
    assert out.loss.item() == pytest.approx(-math.exp(0.2), rel=1e-6)
    out.loss.backward()
    # ∂/∂lp_t of −(1/2)·Σ_t e^0.2 with ∂s/∂lp_t = s/2 → −e^0.2/2 per active token
    torch.testing.assert_close(lp.grad, torch.tensor([[-math.exp(0.2) / 2, -math.exp(0.2) / 2, 0.0]]))
    assert out.metrics["ratio_mean"] == pytest.approx(math.exp(0.2), rel=1e-6)
    # sequence level clips the whole sequence: s = e^0.2 > 1 + 0.1 → zero gradient everywhere
    lp.grad = None
    clipped = clipped_surrogate(lp, torch.zeros(1, 3), torch.tensor([1.0]), clip_low=0.1, mask=mask,
                                ratio_level="sequence")
    clipped.loss.backward()
    assert torch.count_nonzero(lp.grad) == 0 and clipped.metrics["clipfrac_high"] == 1.0


def test_dr_grpo_aggregation_in_surrogate():
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = clipped_surrogate(lp, lp, torch.tensor([1.0, 1.0]), mask=mask, aggregation="seq_mean_token_sum_norm",
                            max_length=5)
    assert out.loss.item() == pytest.approx(-3 / (2 * 5))  # −(2 + 1)/(G·L_max)
    tm = clipped_surrogate(lp, lp, torch.tensor([1.0, 1.0]), mask=mask, aggregation="token_mean")
    assert tm.loss.item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="max_length"):
        clipped_surrogate(lp, lp, torch.ones(2), aggregation="seq_mean_token_sum_norm")


def test_surrogate_errors():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="ratio_level"):
        clipped_surrogate(x, x, x, ratio_level="chunk")
    with pytest.raises(ValueError, match="aggregation"):
        clipped_surrogate(x, x, x, aggregation="mean")
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_surrogate(x, x, x, dual_clip=1.0)
    with pytest.raises(ValueError, match="clip_low"):
        clipped_surrogate(x, x, x, clip_low=-0.1)
    with pytest.raises(ValueError, match="old_log_prob"):
        clipped_surrogate(x, torch.zeros(3), x)
    with pytest.raises(ValueError, match="advantages"):
        clipped_surrogate(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 2))


# --- KL estimators ------------------------------------------------------------------------------------


def test_kl_estimators_hand_values():
    lp = torch.tensor([0.0, 0.0])
    ref = torch.tensor([math.log(2.0), -1.0])  # λ = ln 2, −1
    torch.testing.assert_close(kl_estimator(lp, ref, "k1"), torch.tensor([-0.6931472, 1.0]))
    torch.testing.assert_close(kl_estimator(lp, ref, "k2"), torch.tensor([0.2402265, 0.5]))  # ½λ²
    # k3 = e^λ − λ − 1: 2 − 0.6931472 − 1 = 0.3068528; e^−1 + 1 − 1 = 0.3678794
    torch.testing.assert_close(kl_estimator(lp, ref, "k3"), torch.tensor([0.3068528, 0.3678794]))


def test_kl_clamp():
    lp, ref = torch.tensor([0.0, 0.0]), torch.tensor([30.0, -0.5])
    k3 = kl_estimator(lp, ref, "k3", clamp=VERL_KL_CLAMP)
    assert k3[0].item() == 10.0  # λ → 20, e^20 − 21 → clamped to 10
    assert k3[1].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)  # untouched
    assert kl_estimator(lp, ref, "k1", clamp=VERL_KL_CLAMP)[0].item() == -10.0
    assert kl_estimator(lp, ref, "k3")[0].item() > 1e12  # unclamped


def test_kl_estimators_monte_carlo():
    p, q = Normal(0.0, 1.0), Normal(0.5, 1.2)  # θ and reference
    torch.manual_seed(0)
    x = p.sample(torch.Size([200_000]))
    lp, ref = p.log_prob(x), q.log_prob(x)
    true_kl = kl_divergence(p, q).item()  # log(1.2) + (1 + 0.25)/(2·1.44) − ½ = 0.0563
    k1, k2, k3 = (kl_estimator(lp, ref, k) for k in ("k1", "k2", "k3"))
    assert bool((k3 >= 0).all())
    assert k1.mean().item() == pytest.approx(true_kl, abs=0.004)
    assert k3.mean().item() == pytest.approx(true_kl, abs=0.004)
    assert k1.min().item() < 0  # k1 is unbiased but not pointwise positive
    # k3's advantage (Schulman): for nearby policies its variance is O(λ⁴) against k1's O(λ²)
    near = Normal(0.1, 1.0).log_prob(x)
    assert kl_estimator(lp, near, "k3").std().item() < 0.2 * kl_estimator(lp, near, "k1").std().item()


def test_kl_errors():
    with pytest.raises(ValueError, match="kind"):
        kl_estimator(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="clamp"):
        kl_estimator(torch.zeros(2), torch.zeros(2), "k3", clamp=(0.0, 10.0))


# --- Gaussian-mean KL ----------------------------------------------------------------------------------


def test_gaussian_mean_kl_hand_values():
    mean, ref = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    # flow_grpo: mean_d (1, 4)/(2·2²) = (0.125 + 0.5)/2 = 0.3125
    assert gaussian_mean_kl(mean, ref, 2.0).item() == pytest.approx(0.3125)
    # exact: ÷(−Δ) = ÷0.25 → 1.25 = mean_d KL(N(μ, 1) ‖ N(0, 1)) with s = 2·√0.25 = 1: (0.5 + 2)/2
    assert gaussian_mean_kl(mean, ref, 2.0, step_delta=-0.25, convention="exact").item() == pytest.approx(1.25)
    per_sample = gaussian_mean_kl(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(per_sample, torch.tensor([0.5, 2.0]))  # 1/(2·1), 1/(2·0.25)


def test_gaussian_mean_kl_exact_equals_torch_kl_of_sde_steps():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=gen)
    v_theta, v_ref = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    sig, sig_n = torch.tensor([1.0, 0.6, 0.3]), torch.tensor([0.9, 0.5, 0.1])
    for kind in ("flow_grpo", "dance", "cps"):
        a = sde_step(v_theta, x, sig, sig_n, kind=kind, noise_level=0.7, noise=torch.zeros_like(x))
        b = sde_step(v_ref, x, sig, sig_n, kind=kind, noise_level=0.7, noise=torch.zeros_like(x))
        ours = gaussian_mean_kl(a.mean, b.mean, a.std, step_delta=sig_n - sig, convention="exact")
        ref = kl_divergence(Normal(a.mean, a.step_std.expand_as(a.mean)), Normal(b.mean, b.step_std.expand_as(b.mean)))
        torch.testing.assert_close(ours, ref.mean(dim=(1, 2)), rtol=1e-5, atol=1e-7)
        flow = gaussian_mean_kl(a.mean, b.mean, a.std)
        torch.testing.assert_close(flow, ours * (sig - sig_n), rtol=1e-5, atol=1e-7)  # Δ dropped on purpose
    # flow_grpo: μ_θ − μ_ref = (1 + g²(1−σ)/(2σ))·Δ·(v_θ − v_ref), a velocity-MSE penalty
    a = sde_step(v_theta, x, 0.6, 0.5, noise_level=0.7, noise=torch.zeros_like(x))
    b = sde_step(v_ref, x, 0.6, 0.5, noise_level=0.7, noise=torch.zeros_like(x))
    g2 = 0.49 * 0.6 / 0.4
    coef = (1 + g2 * 0.4 / 1.2) * -0.1
    expected = (coef**2 * (v_theta - v_ref) ** 2).mean(dim=(1, 2)) / (2 * g2)
    torch.testing.assert_close(gaussian_mean_kl(a.mean, b.mean, a.std), expected, rtol=1e-4, atol=1e-8)


def test_gaussian_mean_kl_errors():
    m = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="convention"):
        gaussian_mean_kl(m, m, 1.0, convention="k3")
    with pytest.raises(ValueError, match="step_delta"):
        gaussian_mean_kl(m, m, 1.0, convention="exact")
    with pytest.raises(ValueError, match="step_delta"):
        gaussian_mean_kl(m, m, 1.0, step_delta=0.1, convention="exact")
    with pytest.raises(ValueError, match="std"):
        gaussian_mean_kl(m, m, torch.ones(4))
