"""Tests for mllm_rft.objective: hand-computed values per mode, the card's length-bias example, and equality with
TRL 1.16's `GRPOTrainer` (loss, gradients, metrics and advantages), called for real on a tiny offline Qwen2."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
import torch

from mllm_rft.objective import PRESETS, ObjectiveConfig, compute_advantages, policy_loss, preset

# --- plain-python references (no torch, no code under test) ------------------------------------------------


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _ppo_token(rho: float, a: float, cl: float, ch: float, dual: float | None = None) -> float:
    """ℓ = −min(ρ·A, clip(ρ)·A); dual clip for A < 0: min(ℓ, −c·A)."""
    loss = -min(rho * a, _clip(rho, 1 - cl, 1 + ch) * a)
    if dual is not None and a < 0:
        loss = min(loss, -dual * a)
    return loss


def _aggregate(rows: list[list[float]], mode: str, max_length: int | None = None) -> float:
    """rows: per-sequence lists of the active tokens' losses."""
    if mode == "seq_mean_token_mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    if mode == "token_mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    return sum(sum(r) for r in rows) / (len(rows) * max_length)


# Two sequences, T = 3; the second has L = 2 and garbage in its padding.
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
DELTA = [[0.1, 0.4, -0.5], [0.3, -0.4]]  # active tokens only
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([0.8, -1.5])


def _logp(delta_rows=DELTA, old=OLD, pad: float = 9.0) -> torch.Tensor:
    """old + δ on active tokens, old + pad on padding; a leaf that requires grad."""
    lp = old.clone()
    for i, row in enumerate(delta_rows):
        for t in range(old.shape[1]):
            lp[i, t] = old[i, t] + (row[t] if t < len(row) else pad)
    return lp.requires_grad_(True)


# --- configuration -----------------------------------------------------------------------------------------


def test_presets_carry_the_papers_settings():
    g, d, dr, gs = PRESETS["grpo"], PRESETS["dapo"], PRESETS["dr_grpo"], PRESETS["gspo"]
    assert (g.std_scaling, g.aggregation, g.ratio, g.clip_low, g.clip_high, g.beta, g.kl) == (
        "group", "seq_mean_token_mean", "token", 0.2, 0.2, 0.04, "k3")
    assert (d.aggregation, d.clip_low, d.clip_high, d.beta) == ("token_mean", 0.2, 0.28, 0.0)
    assert (dr.std_scaling, dr.aggregation, dr.beta, dr.max_length) == ("none", "constant", 0.0, None)
    assert (gs.ratio, gs.aggregation, gs.clip_low, gs.clip_high, gs.beta) == (
        "sequence", "seq_mean_token_mean", 3e-4, 4e-4, 0.0)
    assert all(p.loss == "ppo" and p.dual_clip is None for p in PRESETS.values())
    assert preset("dr_grpo", max_length=512).max_length == 512
    with pytest.raises(ValueError, match="unknown preset"):
        preset("ppo")


@pytest.mark.parametrize(
    ("field", "value"),
    [("std_scaling", "global"), ("aggregation", "sum"), ("ratio", "chunk"), ("kl", "k4"), ("loss", "grpo"),
     ("clip_low", 1.0), ("clip_high", -0.1), ("dual_clip", 1.0), ("beta", -0.1), ("adv_eps", -1.0),
     ("max_length", 0), ("log_ratio_clamp", 0.0), ("cispo_max", 0.0), ("sapo_tau_neg", 0.0)],
)
def test_config_rejects_bad_fields_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        ObjectiveConfig(**{field: value})


def test_dual_clip_is_ppo_only_and_constant_needs_max_length():
    with pytest.raises(ValueError, match="dual_clip"):
        ObjectiveConfig(loss="cispo", dual_clip=3.0)
    with pytest.raises(ValueError, match="max_length"):
        policy_loss(_logp(), OLD, ADV, MASK, PRESETS["dr_grpo"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["grpo"].beta = 0.0


# --- advantages --------------------------------------------------------------------------------------------

REWARDS = [1.0, 0.0, 0.5, 0.0, 2.0, 2.0, 0.3, 1.7, -1.0]
GROUPS = [0, 0, 0, 0, 1, 1, 2, 2, 2]


def test_advantages_group_batch_none_by_hand():
    groups = {g: [r for r, h in zip(REWARDS, GROUPS, strict=True) if h == g] for g in set(GROUPS)}
    means = {g: sum(v) / len(v) for g, v in groups.items()}
    stds = {g: statistics.stdev(v) for g, v in groups.items()}  # n − 1, like TRL
    batch_std = statistics.stdev(REWARDS)
    expected = {
        "group": [(r - means[g]) / (stds[g] + 1e-4) for r, g in zip(REWARDS, GROUPS, strict=True)],
        "batch": [(r - means[g]) / (batch_std + 1e-4) for r, g in zip(REWARDS, GROUPS, strict=True)],
        "none": [r - means[g] for r, g in zip(REWARDS, GROUPS, strict=True)],
    }
    for mode, exp in expected.items():
        got = compute_advantages(torch.tensor(REWARDS), torch.tensor(GROUPS), ObjectiveConfig(std_scaling=mode))
        assert got.tolist() == pytest.approx(exp, abs=1e-6), mode
    # group 1 has equal rewards: no signal in any mode
    assert compute_advantages(torch.tensor(REWARDS), GROUPS, PRESETS["grpo"])[4:6].tolist() == [0.0, 0.0]
    # adv_eps reaches the denominator
    big_eps = compute_advantages(torch.tensor(REWARDS), GROUPS, ObjectiveConfig(adv_eps=1.0))
    assert big_eps[0].item() == pytest.approx((1.0 - means[0]) / (stds[0] + 1.0))


# --- PPO clipped surrogate, aggregations -------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "constant"])
def test_ppo_token_ratio_by_hand(aggregation):
    cfg = ObjectiveConfig(aggregation=aggregation, max_length=4, clip_low=0.2, clip_high=0.28)
    rows = [[_ppo_token(math.exp(d), ADV[i].item(), 0.2, 0.28) for d in DELTA[i]] for i in range(2)]
    # e.g. row 0, token 1: ρ = e^0.4 = 1.4918 > 1.28 with A = 0.8 → ℓ = −1.28·0.8 = −1.024
    assert rows[0][1] == pytest.approx(-1.024)
    loss, metrics = policy_loss(_logp(), OLD, ADV, MASK, cfg)
    assert loss.item() == pytest.approx(_aggregate(rows, aggregation, 4), rel=1e-6)
    # clipped tokens: row 0 token 1 (ρ > 1.28, A > 0); row 1 token 1 (ρ = 0.670 < 0.8, A < 0); 5 active tokens
    assert metrics["clip_frac_high"] == pytest.approx(1 / 5)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 5)
    ratios = [math.exp(d) for row in DELTA for d in row]
    assert metrics["ratio_mean"] == pytest.approx(sum(ratios) / 5, rel=1e-6)
    assert metrics["ratio_min"] == pytest.approx(min(ratios), rel=1e-6)
    assert metrics["ratio_max"] == pytest.approx(max(ratios), rel=1e-6)
    assert "kl_mean" not in metrics and "dual_clip_frac" not in metrics


def test_clip_higher_changes_only_positive_advantage_tokens():
    lp = _logp()
    sym, _ = policy_loss(lp, OLD, ADV, MASK, ObjectiveConfig(aggregation="token_mean", clip_high=0.2))
    asym, _ = policy_loss(lp, OLD, ADV, MASK, ObjectiveConfig(aggregation="token_mean", clip_high=0.28))
    # only row 0 token 1 (ρ = 1.49, A = 0.8) changes: −1.2·0.8 → −1.28·0.8, over 5 tokens
    assert (asym - sym).item() == pytest.approx((-1.28 * 0.8 + 1.2 * 0.8) / 5, rel=1e-5)
    (g_sym,) = torch.autograd.grad(sym, lp)
    assert g_sym[0, 1].item() == 0.0  # clipped: no gradient
    g_row1 = torch.autograd.grad(policy_loss(lp, OLD, ADV, MASK, ObjectiveConfig(aggregation="token_mean"))[0], lp)
    # row 1 token 0: A < 0, ρ = e^0.3 above 1 + ε → unclipped (pessimistic side): ∂ℓ/∂logp = −A·ρ / 5
    assert g_row1[0][1, 0].item() == pytest.approx(1.5 * math.exp(0.3) / 5, rel=1e-6)


def test_dual_clip_only_bites_for_negative_advantages():
    delta = [[1.6, 0.0], [1.6, 0.0]]  # ρ = e^1.6 = 4.95 > c = 3 on token 0 of both rows
    old = torch.zeros(2, 2)
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -1.0])
    lp = _logp(delta, old)
    base = ObjectiveConfig(aggregation="token_mean")
    dual = dataclasses.replace(base, dual_clip=3.0)
    l0, _ = policy_loss(lp, old, adv, mask, base)
    l1, m1 = policy_loss(lp, old, adv, mask, dual)
    rho = math.exp(1.6)
    # A > 0: ℓ = −1.2 (clipped high) with or without dual clip; A < 0: ℓ = ρ without, 3 with it; token 1: ±1
    assert l0.item() == pytest.approx((-1.2 - 1.0 + rho + 1.0) / 4, rel=1e-6)
    assert l1.item() == pytest.approx((-1.2 - 1.0 + 3.0 + 1.0) / 4, rel=1e-6)
    assert m1["dual_clip_frac"] == pytest.approx(1 / 4)
    (g,) = torch.autograd.grad(l1, lp)
    assert g[1, 0].item() == 0.0  # the capped token has no gradient
    # positive advantages: dual clip never changes anything
    pos = torch.tensor([1.0, 2.0])
    a, _ = policy_loss(lp, old, pos, mask, base)
    b, mb = policy_loss(lp, old, pos, mask, dual)
    assert a.item() == b.item() and mb["dual_clip_frac"] == 0.0


# --- GSPO ---------------------------------------------------------------------------------------------------


def test_gspo_sequence_ratio_is_exp_of_masked_mean_log_ratio():
    cfg = ObjectiveConfig(ratio="sequence", clip_low=0.2, clip_high=0.2)
    s = [math.exp(sum(row) / len(row)) for row in DELTA]  # exp(0.0/3) = 1, exp(−0.1/2)
    loss, metrics = policy_loss(_logp(), OLD, ADV, MASK, cfg)
    assert metrics["ratio_min"] == pytest.approx(min(s), rel=1e-6)
    assert metrics["ratio_max"] == pytest.approx(max(s), rel=1e-6)
    assert metrics["ratio_mean"] == pytest.approx(sum(s) / 2, rel=1e-6)  # per sequence, not per token
    expected = sum(_ppo_token(s[i], ADV[i].item(), 0.2, 0.2) for i in range(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # a tight clip: row 1 (A < 0, s = 0.951 < 1 − 3e-4) is clipped; per-sequence fraction 1/2
    _, tight = policy_loss(_logp(), OLD, ADV, MASK, PRESETS["gspo"])
    assert tight["clip_frac_low"] == pytest.approx(0.5)


def test_gspo_token_values_and_gradients():
    lp = _logp([[0.01, -0.02, 0.03], [0.02, 0.0]])
    seq = ObjectiveConfig(ratio="sequence")
    tok = ObjectiveConfig(ratio="sequence_token")
    l_seq, _ = policy_loss(lp, OLD, ADV, MASK, seq)
    l_tok, _ = policy_loss(lp, OLD, ADV, MASK, tok)
    (g_seq,) = torch.autograd.grad(l_seq, lp)
    (g_tok,) = torch.autograd.grad(l_tok, lp)
    assert l_tok.item() == pytest.approx(l_seq.item(), rel=1e-6)
    torch.testing.assert_close(g_tok, g_seq)  # sequence advantages: GSPO-token ≡ GSPO
    # token advantages (unclipped): ∂loss/∂logp_{i,t} = −s_i·A_{i,t}/(N·L_i); plain GSPO mixes them over the sequence
    adv_t = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.9, 0.0]])
    (g,) = torch.autograd.grad(policy_loss(lp, OLD, adv_t, MASK, tok)[0], lp)
    s = [math.exp(0.02 / 3), math.exp(0.01)]
    lengths = [3, 2]
    for i in range(2):
        for t in range(lengths[i]):
            assert g[i, t].item() == pytest.approx(-s[i] * adv_t[i, t].item() / (2 * lengths[i]), rel=1e-5)
    (g_plain,) = torch.autograd.grad(policy_loss(lp, OLD, adv_t, MASK, seq)[0], lp)
    assert not torch.allclose(g_plain, g)


# --- CISPO, SAPO, log-ratio clamp ---------------------------------------------------------------------------


def test_cispo_by_hand():
    cfg = ObjectiveConfig(loss="cispo", cispo_max=1.2, aggregation="token_mean")
    lp = _logp()
    loss, metrics = policy_loss(lp, OLD, ADV, MASK, cfg)
    w = [[min(math.exp(d), 1.2) for d in row] for row in DELTA]
    lps = [[OLD[i, t].item() + DELTA[i][t] for t in range(len(DELTA[i]))] for i in range(2)]
    rows = [[-w[i][t] * ADV[i].item() * lps[i][t] for t in range(len(DELTA[i]))] for i in range(2)]
    assert loss.item() == pytest.approx(_aggregate(rows, "token_mean"), rel=1e-6)
    (g,) = torch.autograd.grad(loss, lp)
    # the weight is stopped: ∂ℓ/∂logp = −min(ρ, ε_max)·A, also on the clipped token (row 0, t 1)
    for i in range(2):
        for t in range(len(DELTA[i])):
            assert g[i, t].item() == pytest.approx(-w[i][t] * ADV[i].item() / 5, rel=1e-6)
    assert g[1, 2].item() == 0.0
    assert metrics["clip_frac_high"] == pytest.approx(1 / 5)  # ρ = 1.49 > 1.2 with A > 0
    assert metrics["clip_frac_low"] == 0.0


def test_sapo_soft_gate_by_hand():
    cfg = ObjectiveConfig(loss="sapo", sapo_tau_pos=1.0, sapo_tau_neg=1.05)
    lp = _logp()
    loss, metrics = policy_loss(lp, OLD, ADV, MASK, cfg)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    rows, grads = [], []
    for i in range(2):
        a = ADV[i].item()
        tau = 1.0 if a > 0 else 1.05
        rows.append([-sig(tau * (math.exp(d) - 1)) * 4 / tau * a for d in DELTA[i]])
        # d/dlogp f(ρ) = 4·σ·(1 − σ)·ρ
        grads.append([-a * 4 * sig(tau * (math.exp(d) - 1)) * (1 - sig(tau * (math.exp(d) - 1))) * math.exp(d)
                      / (2 * len(DELTA[i])) for d in DELTA[i]])
    assert loss.item() == pytest.approx(_aggregate(rows, "seq_mean_token_mean"), rel=1e-6)
    (g,) = torch.autograd.grad(loss, lp)
    for i in range(2):
        assert g[i, : len(DELTA[i])].tolist() == pytest.approx(grads[i], rel=1e-5)
    assert metrics["clip_frac_low"] == metrics["clip_frac_high"] == 0.0


def test_log_ratio_clamp():
    old = torch.zeros(1, 2)
    mask = torch.tensor([[1, 0]])
    adv = torch.tensor([-0.5])
    lp = _logp([[25.0]], old)
    free, m_free = policy_loss(lp, old, adv, mask, ObjectiveConfig())
    clamped, m_c = policy_loss(lp, old, adv, mask, ObjectiveConfig(log_ratio_clamp=20.0))
    assert free.item() == pytest.approx(0.5 * math.exp(25.0), rel=1e-5)
    assert clamped.item() == pytest.approx(0.5 * math.exp(20.0), rel=1e-5)
    assert m_c["ratio_max"] == pytest.approx(math.exp(20.0), rel=1e-5)
    (g,) = torch.autograd.grad(clamped, lp)
    assert g.abs().sum().item() == 0.0


# --- KL ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_by_hand(kind):
    ref = torch.tensor([[-1.3, -1.0, -0.2], [-1.0, -1.5, 99.0]])
    lp = _logp()
    estimate = {"k1": lambda lam: -lam, "k2": lambda lam: 0.5 * lam**2, "k3": lambda lam: math.exp(lam) - lam - 1}
    rows = [[estimate[kind](ref[i, t].item() - lp[i, t].item()) for t in range(len(DELTA[i]))] for i in range(2)]
    cfg = ObjectiveConfig(beta=0.1, kl=kind)
    zero = torch.zeros(2)  # A = 0: the policy term vanishes, only β·KL remains
    loss, metrics = policy_loss(lp, OLD, zero, MASK, cfg, ref)
    assert loss.item() == pytest.approx(0.1 * _aggregate(rows, "seq_mean_token_mean"), rel=1e-5)
    assert metrics["kl_mean"] == pytest.approx(_aggregate(rows, "token_mean"), rel=1e-5)
    # TRL's bias correction multiplies each token's estimate by its ratio
    corr, m_corr = policy_loss(lp, OLD, zero, MASK, dataclasses.replace(cfg, kl_bias_correction=True), ref)
    rows_c = [[rows[i][t] * math.exp(DELTA[i][t]) for t in range(len(DELTA[i]))] for i in range(2)]
    assert corr.item() == pytest.approx(0.1 * _aggregate(rows_c, "seq_mean_token_mean"), rel=1e-5)
    assert m_corr["kl_mean"] == pytest.approx(_aggregate(rows_c, "token_mean"), rel=1e-5)


def test_beta_zero_rejects_reference_and_logs_no_kl():
    lp = _logp()
    with pytest.raises(ValueError, match="beta == 0"):
        policy_loss(lp, OLD, ADV, MASK, PRESETS["dapo"], ref_logp=OLD)
    _, metrics = policy_loss(lp, OLD, ADV, MASK, PRESETS["dapo"])
    assert "kl_mean" not in metrics
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(lp, OLD, ADV, MASK, PRESETS["grpo"])


@pytest.mark.parametrize("loss_kind", ["ppo", "cispo", "sapo"])
@pytest.mark.parametrize("ratio", ["token", "sequence", "sequence_token"])
def test_non_finite_padding_never_reaches_loss_or_gradient(loss_kind, ratio):
    cfg = ObjectiveConfig(loss=loss_kind, ratio=ratio, beta=0.1, kl_bias_correction=True)
    ref = torch.tensor([[-1.3, -1.0, -0.2], [-1.0, -1.5, float("nan")]])
    clean, _ = policy_loss(_logp(), OLD, ADV, MASK, cfg, ref.nan_to_num(0.0))
    lp = _logp(pad=-math.inf)
    old = OLD.clone()
    old[1, 2] = -math.inf
    loss, metrics = policy_loss(lp, old, ADV, MASK, cfg, ref)
    (g,) = torch.autograd.grad(loss, lp)
    assert loss.item() == pytest.approx(clean.item(), rel=1e-6)
    assert torch.isfinite(g).all() and g[1, 2].item() == 0.0
    assert all(math.isfinite(v) for v in metrics.values())


# --- on-policy = REINFORCE with a baseline; the card's length-bias example ---------------------------------


def test_on_policy_grpo_gradient_is_reinforce_with_baseline():
    torch.manual_seed(0)
    n, t_len, vocab = 3, 4, 5
    logits = torch.randn(n, t_len, vocab, requires_grad=True)
    tokens = torch.randint(0, vocab, (n, t_len))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    adv = torch.tensor([0.7, -1.1, 0.4])
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    cfg = dataclasses.replace(PRESETS["grpo"], beta=0.0)
    loss, metrics = policy_loss(logp, logp.detach(), adv, mask, cfg)
    assert metrics["ratio_min"] == metrics["ratio_max"] == 1.0
    assert metrics["clip_frac_low"] == metrics["clip_frac_high"] == 0.0
    (g,) = torch.autograd.grad(loss, logits)
    # REINFORCE with the group baseline: −∇ (1/N) Σ_i (A_i/L_i) Σ_t m·log π(o_t), ∂log π(o)/∂z = onehot(o) − softmax(z)
    probs = torch.softmax(logits.detach(), -1)
    lengths = mask.sum(1).tolist()
    for i in range(n):
        for t in range(t_len):
            onehot = [1.0 if v == tokens[i, t].item() else 0.0 for v in range(vocab)]
            coef = -adv[i].item() / (n * lengths[i]) * mask[i, t].item()
            expected = [coef * (onehot[v] - probs[i, t, v].item()) for v in range(vocab)]
            assert g[i, t].tolist() == pytest.approx(expected, abs=1e-7)


def _per_token_weights(lengths, rewards, aggregation, max_length=8):
    """−∂loss/∂logp on-policy: the weight each active token's ∇log π gets; one group."""
    n, t_len = len(lengths), max(max(lengths), max_length)
    mask = torch.tensor([[1] * length + [0] * (t_len - length) for length in lengths])
    logp = torch.full((n, t_len), -1.0, requires_grad=True)
    cfg = ObjectiveConfig(aggregation=aggregation, max_length=max_length)
    adv = compute_advantages(torch.tensor(rewards), [0] * n, cfg)
    (g,) = torch.autograd.grad(policy_loss(logp, logp.detach(), adv, mask, cfg)[0], logp)
    return [-g[i, 0].item() for i in range(n)], adv.tolist()


def test_aggregation_length_bias_long_wrong_vs_short_right():
    # card §2 (Dr. GRPO): a short right answer (L 2, r 1) and a long wrong one (L 8, r 0) in one group
    (w_short, w_long), (a_right, a_wrong) = _per_token_weights([2, 8], [1.0, 0.0], "seq_mean_token_mean")
    assert a_right == pytest.approx(-a_wrong) and a_right > 0
    # per-sequence normalisation: each wrong token is pushed down 4× less than each right token is pushed up
    assert w_short == pytest.approx(a_right / (2 * 2)) and w_long == pytest.approx(a_wrong / (2 * 8))
    assert abs(w_short) == pytest.approx(4 * abs(w_long))
    # token mean: equal per-token magnitudes, A/ΣL
    (t_short, t_long), _ = _per_token_weights([2, 8], [1.0, 0.0], "token_mean")
    assert t_short == pytest.approx(a_right / 10) and t_long == pytest.approx(a_wrong / 10)
    # constant: equal magnitudes A/(N·L_max)
    (c_short, c_long), _ = _per_token_weights([2, 8], [1.0, 0.0], "constant")
    assert c_short == pytest.approx(a_right / 16) and c_long == pytest.approx(a_wrong / 16)
    # ...and only the constant denominator is independent of the other answer's length
    (t_short6, _), _ = _per_token_weights([2, 6], [1.0, 0.0], "token_mean")
    (c_short6, _), _ = _per_token_weights([2, 6], [1.0, 0.0], "constant")
    assert t_short6 == pytest.approx(a_right / 8) and t_short6 != pytest.approx(t_short)
    assert c_short6 == pytest.approx(c_short)


def test_token_mean_micro_batches_sum_to_the_batch_loss():
    cfg = PRESETS["dapo"]
    lp = _logp()
    full, _ = policy_loss(lp, OLD, ADV, MASK, cfg)
    parts = [policy_loss(lp[i: i + 1], OLD[i: i + 1], ADV[i: i + 1], MASK[i: i + 1], cfg, num_active_tokens=5)[0]
             for i in range(2)]
    assert sum(p.item() for p in parts) == pytest.approx(full.item(), rel=1e-6)
    plain = [policy_loss(lp[i: i + 1], OLD[i: i + 1], ADV[i: i + 1], MASK[i: i + 1], cfg)[0] for i in range(2)]
    assert sum(p.item() for p in plain) != pytest.approx(full.item(), rel=1e-3)
    with pytest.raises(ValueError, match="num_active_tokens"):
        policy_loss(lp, OLD, ADV, MASK, ObjectiveConfig(), num_active_tokens=5)


# --- TRL 1.16 GRPOTrainer as the oracle ------------------------------------------------------------------------
# The real trainer is built offline on CPU from a tiny Qwen2 saved to a temporary directory (a path, so that TRL can
# also build its reference model when beta > 0) and a word-level tokenizer built in-test. Then:
#  * loss: `GRPOTrainer._compute_loss(model, inputs)` with a hand-built `inputs` dict (prompt_ids/mask, completion_ids/
#    mask, advantages, old_per_token_logps, ref_per_token_logps, num_items_in_batch); TRL recomputes the per-token
#    log-probs with its fused LM head; ours come from a plain forward of the same model. The training loop normally
#    sets `current_gradient_accumulation_steps`; we set it to 1 and put the model in train mode (the train branch).
#  * advantages: `GRPOTrainer._generate_and_score_completions(inputs)` really generates with the tiny model and
#    scores with a reward function that returns fixed rewards; we compare its `advantages`.

B, P, T = 4, 3, 5
LENGTHS = [5, 2, 4, 1]
TRL_ADV = torch.tensor([1.0, -0.5, -1.2, 0.7])
# δ = log π_θ − log π_old per active token, chosen to hit every clip region at ε = 0.2/0.28 and the dual clip c = 3
TRL_DELTA = torch.tensor([
    [0.1, 0.3, -0.3, 0.0, 0.24],    # A > 0: ρ 1.35 > 1.28 (clipped high), 1.27 (clipped at 0.2 only), 0.74
    [-0.4, 1.5, 0.0, 0.0, 0.0],     # A < 0: ρ 0.67 (clipped low), 4.48 (dual clip)
    [0.2, -0.1, 1.2, -0.25, 0.0],   # A < 0: ρ 3.32 (dual clip), 0.78 (clipped low)
    [0.15, 0.0, 0.0, 0.0, 0.0],     # A > 0
])
# GSPO (ε 3e-4/4e-4): sequence log-ratios 6.8e-4 (A > 0: clipped high), 5.5e-4, −5.3e-4 (A < 0: clipped low), 1.5e-4
GSPO_SCALE = torch.tensor([[1e-2], [1e-3], [-2e-3], [1e-3]])
KL_NOISE = torch.tensor([
    [0.3, -0.2, 0.5, 0.1, -0.4], [0.2, -0.6, 0.0, 0.0, 0.0], [-0.1, 0.4, 0.25, -0.3, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0]])


@pytest.fixture(scope="module")
def trl_env(tmp_path_factory):
    pytest.importorskip("trl")
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(30)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                        padding_side="left")
    config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("tiny_qwen2")
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    dataset = Dataset.from_dict({"prompt": ["w1 w2 w3", "w4 w5", "w6"]})
    return {"model_dir": str(model_dir), "tokenizer": tokenizer, "dataset": dataset,
            "out": str(tmp_path_factory.mktemp("trl_out"))}


def _trainer(env, reward_fn=None, **config):
    from trl import GRPOConfig, GRPOTrainer

    kwargs = dict(output_dir=env["out"], bf16=False, use_cpu=True, report_to=[], save_strategy="no",
                  gradient_checkpointing=False, per_device_train_batch_size=B, num_generations=2,
                  max_completion_length=6, model_init_kwargs={"dtype": torch.float32}, seed=0)
    kwargs.update(config)
    trainer = GRPOTrainer(model=env["model_dir"], reward_funcs=reward_fn or (lambda prompts, **_: [0.0] * len(prompts)),
                          args=GRPOConfig(**kwargs), train_dataset=env["dataset"], processing_class=env["tokenizer"])
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by transformers' training loop
    return trainer


TRL_CASES = {
    # name: (our config, GRPOConfig fields, δ scale)
    "grpo": (PRESETS["grpo"], dict(loss_type="grpo", beta=0.04, epsilon=0.2, use_bias_correction_kl=False), None),
    "grpo_kl_bias_correction": (dataclasses.replace(PRESETS["grpo"], kl_bias_correction=True),
                                dict(loss_type="grpo", beta=0.04, epsilon=0.2, use_bias_correction_kl=True), None),
    "dapo": (PRESETS["dapo"], dict(loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28), None),
    "dr_grpo": (preset("dr_grpo", max_length=6), dict(loss_type="dr_grpo", beta=0.0, epsilon=0.2), None),
    "dr_grpo_kl": (preset("dr_grpo", max_length=6, beta=0.04, kl_bias_correction=True),
                   dict(loss_type="dr_grpo", beta=0.04, epsilon=0.2, use_bias_correction_kl=True), None),
    "gspo": (PRESETS["gspo"], dict(loss_type="grpo", importance_sampling_level="sequence", beta=0.0,
                                   epsilon=3e-4, epsilon_high=4e-4), GSPO_SCALE),
    "gspo_kl": (preset("gspo", beta=0.02, kl_bias_correction=True),
                dict(loss_type="grpo", importance_sampling_level="sequence", beta=0.02, epsilon=3e-4,
                     epsilon_high=4e-4, use_bias_correction_kl=True), GSPO_SCALE),
    # our verl-style dual clip c equals TRL's two-sided clipping `delta` = c when c ≥ 1 + ε_high
    "dapo_dual_clip_vs_trl_delta": (preset("dapo", dual_clip=3.0),
                                    dict(loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28, delta=3.0), None),
    "cispo": (ObjectiveConfig(loss="cispo", cispo_max=1.3, aggregation="token_mean"),
              dict(loss_type="cispo", beta=0.0, epsilon_high=1.3), None),
    "sapo": (ObjectiveConfig(loss="sapo", aggregation="seq_mean_token_mean", sapo_tau_pos=1.0, sapo_tau_neg=1.05),
             dict(loss_type="sapo", beta=0.0, sapo_temperature_pos=1.0, sapo_temperature_neg=1.05), None),
}


def _batch():
    g = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(2, 32, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_ids[0, 0], prompt_mask[0, 0] = 0, 0  # one left-padded prompt
    completion_mask = torch.tensor([[1] * n + [0] * (T - n) for n in LENGTHS])
    completion_ids = torch.randint(2, 32, (B, T), generator=g).masked_fill(completion_mask == 0, 0)
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def _our_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, completion_mask], 1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, P - 1: -1]
    return torch.log_softmax(logits.float(), -1).gather(-1, completion_ids[..., None])[..., 0]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", list(TRL_CASES))
def test_loss_gradients_and_metrics_equal_trl(trl_env, case):
    cfg, trl_config, scale = TRL_CASES[case]
    trainer = _trainer(trl_env, **trl_config)
    model = trainer.model
    prompt_ids, prompt_mask, completion_ids, completion_mask = _batch()
    logp = _our_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    delta = TRL_DELTA if scale is None else TRL_DELTA * scale
    pad = (completion_mask == 0).float()
    old = (logp.detach() - delta) + 7.0 * pad  # finite garbage on the padding
    ref = (logp.detach() + KL_NOISE) - 5.0 * pad
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": TRL_ADV, "old_per_token_logps": old,
              "num_items_in_batch": completion_mask.sum()}
    if cfg.beta > 0:
        inputs["ref_per_token_logps"] = ref

    model.zero_grad()
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = _grads(model)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    model.zero_grad()
    loss, metrics = policy_loss(logp, old, TRL_ADV, completion_mask, cfg, ref if cfg.beta > 0 else None)
    loss.backward()
    ours = _grads(model)

    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-7)
    assert ours.keys() == trl_grads.keys() and len(ours) > 0
    for name, grad in trl_grads.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-4, atol=1e-7, msg=f"{case}: {name}")
    if cfg.loss == "ppo":
        assert metrics["clip_frac_low"] == pytest.approx(trl_metrics["clip_ratio/low_mean"], abs=1e-6)
        assert metrics["clip_frac_high"] == pytest.approx(trl_metrics["clip_ratio/high_mean"], abs=1e-6)
        assert metrics["clip_frac_low"] > 0 and metrics["clip_frac_high"] > 0  # the inputs do exercise clipping
    if cfg.loss == "cispo":
        assert metrics["clip_frac_high"] == pytest.approx(trl_metrics["cispo_clip_ratio"], abs=1e-6)
        assert metrics["clip_frac_high"] > 0
    if cfg.beta > 0:
        assert metrics["kl_mean"] == pytest.approx(trl_metrics["kl"], rel=1e-5)
    else:
        assert "kl" not in trl_metrics and "kl_mean" not in metrics
    if cfg.dual_clip is not None:
        assert metrics["dual_clip_frac"] == pytest.approx(2 / 12)


def test_dapo_micro_batch_normaliser_equals_trl_num_items_in_batch(trl_env):
    trainer = _trainer(trl_env, loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28)
    prompt_ids, prompt_mask, completion_ids, completion_mask = _batch()
    half = slice(0, 2)  # a micro-batch of the first two sequences; the whole batch has 12 active tokens
    args = (prompt_ids[half], prompt_mask[half], completion_ids[half], completion_mask[half])
    logp = _our_logps(trainer.model, *args)
    old = logp.detach() - TRL_DELTA[half]
    inputs = {"prompt_ids": args[0], "prompt_mask": args[1], "completion_ids": args[2], "completion_mask": args[3],
              "advantages": TRL_ADV[half], "old_per_token_logps": old, "num_items_in_batch": completion_mask.sum()}
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    loss, _ = policy_loss(logp, old, TRL_ADV[half], args[3], PRESETS["dapo"], num_active_tokens=12)
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_equal_trl(trl_env, scale_rewards):
    rewards = [1.0, 0.0, 0.5, 0.0, 2.0, 2.0, 2.0, 2.0, 0.3, 1.7, -1.0, 2.5]

    def fixed_rewards(prompts, completions, **_):
        return list(rewards)

    trainer = _trainer(trl_env, reward_fn=fixed_rewards, scale_rewards=scale_rewards, per_device_train_batch_size=12,
                       num_generations=4, max_completion_length=3)
    batch = [{"prompt": p} for p in ("w1 w2 w3", "w4 w5", "w6") for _ in range(4)]
    with torch.no_grad():
        out = trainer._generate_and_score_completions(batch)
    ours = compute_advantages(torch.tensor(rewards), [0] * 4 + [1] * 4 + [2] * 4,
                              ObjectiveConfig(std_scaling=scale_rewards))
    torch.testing.assert_close(ours, out["advantages"].float(), rtol=1e-5, atol=1e-6)
    assert ours.abs().sum() > 0
