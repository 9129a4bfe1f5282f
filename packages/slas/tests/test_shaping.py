"""Tests for slas.shaping: γ = 0 equals Flow-GRPO's batch-std advantage (bit for bit and by hand), sign / order,
scale behaviour of both orders, re-centring, clip, schedule, config errors, stats, and a real 2-process gloo run."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist

from shared.advantages import AdvantageOutput, group_advantages
from shared.errors import ConfigError
from shared.training.distributed import run_local_group
from slas.shaping import ShapingConfig, SLASOutput, gamma_at, power, slas_advantages

torch.set_num_threads(1)

RAW = ShapingConfig(gamma=0.0, clip=None)  # the Flow-GRPO batch-std advantage


def _batch(n=48, groups=6, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype)
    ids = torch.randint(0, groups, (n,), generator=gen) * 7 - 5  # sparse, negative, unsorted ids
    return rewards, ids


# --- γ = 0 is Flow-GRPO's batch-std advantage -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("clip", [None, 0.7])
def test_gamma0_equals_shared_batch_std_bit_for_bit(dtype, ddof, clip):
    rewards, ids = _batch(dtype=dtype)
    rewards[ids == ids[0]] = 0.3  # one zero-std group
    rewards = torch.cat([rewards, torch.tensor([0.9], dtype=dtype)])  # and a singleton
    ids = torch.cat([ids, torch.tensor([1000])])
    out = slas_advantages(rewards, ids, ShapingConfig(gamma=0.0, clip=clip, ddof=ddof))
    ref = group_advantages(rewards, ids, std="batch", eps=1e-4, unbiased=ddof == 1, clip=clip)
    assert out.advantages.dtype == dtype
    assert torch.equal(out.advantages, ref.advantages)
    assert out.zero_std_fraction == ref.zero_std_fraction and out.mean_group_std == ref.mean_group_std
    assert isinstance(out, AdvantageOutput)
    if clip is not None:
        assert out.clip_fraction > 0  # the clip level is low enough to bite


def test_hand_computed_example():
    # group 7: [1, 3] (mean 2, Δr = ∓1); group 2: [0, 0, 6] (mean 2, Δr = −2, −2, 4)
    # raw rewards [1, 0, 3, 0, 6]: mean 2, squared deviations 1 + 4 + 1 + 4 + 16 = 26, population std √(26/5) = √5.2
    rewards = torch.tensor([1.0, 0.0, 3.0, 0.0, 6.0], dtype=torch.float64)
    ids = [7, 2, 7, 2, 2]
    delta = torch.tensor([-1.0, -2.0, 1.0, -2.0, 4.0], dtype=torch.float64)
    denom = 5.2**0.5 + 1e-4
    out = slas_advantages(rewards, ids, RAW)
    torch.testing.assert_close(out.advantages, delta / denom, rtol=1e-15, atol=0)
    assert out.sigma_b == pytest.approx(5.2**0.5, rel=1e-15)
    # γ = 1: Ã = sign(Â)·Â² = [−1, −4, 1, −4, 16]/denom²
    out = slas_advantages(rewards, ids, replace(RAW, gamma=1.0))
    expected = torch.tensor([-1.0, -4.0, 1.0, -4.0, 16.0], dtype=torch.float64) / denom**2
    torch.testing.assert_close(out.advantages, expected, rtol=1e-15, atol=0)
    # γ = 0.5: sign·|Â|^1.5
    out = slas_advantages(rewards, ids, replace(RAW, gamma=0.5))
    expected = torch.tensor([-1.0, -(2**1.5), 1.0, -(2**1.5), 8.0], dtype=torch.float64) / denom**1.5
    torch.testing.assert_close(out.advantages, expected, rtol=1e-14, atol=0)
    # ddof 1: std √(26/4) = √6.5; eps 1 enters the denominator
    out = slas_advantages(rewards, ids, replace(RAW, ddof=1, eps=1.0))
    torch.testing.assert_close(out.advantages, delta / (6.5**0.5 + 1.0), rtol=1e-15, atol=0)


def test_hand_example_sigma_b_of_and_order():
    # groups [1, 3] and [10, 12]: Δr = [−1, 1, −1, 1] (std 1); raw rewards mean 6.5, squared deviations
    # 30.25 + 12.25 + 12.25 + 30.25 = 85, population std √21.25
    rewards = torch.tensor([1.0, 3.0, 10.0, 12.0], dtype=torch.float64)
    ids = [0, 0, 1, 1]
    sign = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    raw = slas_advantages(rewards, ids, RAW).advantages
    torch.testing.assert_close(raw, sign / (21.25**0.5 + 1e-4), rtol=1e-15, atol=0)
    centred = replace(RAW, sigma_b_of="centred")
    torch.testing.assert_close(slas_advantages(rewards, ids, centred).advantages, sign / (1 + 1e-4), rtol=1e-15, atol=0)
    # normalise_then_power, γ = 1: (1/(1 + eps))²; power_then_normalise: p(Δr) = ±1, S = 1 → ±1/(1 + eps) for any γ
    got = slas_advantages(rewards, ids, replace(centred, gamma=1.0)).advantages
    torch.testing.assert_close(got, sign / (1 + 1e-4) ** 2, rtol=1e-15, atol=0)
    for gamma in (0.5, 1.0, 2.0):
        got = slas_advantages(rewards, ids, replace(centred, gamma=gamma, order="power_then_normalise")).advantages
        torch.testing.assert_close(got, sign / (1 + 1e-4), rtol=1e-15, atol=0)
    # power_then_normalise with raw rewards: S = std of p(r − 6.5) = √((5.5⁴ + 3.5⁴)·2/4) at γ = 1
    s = ((5.5**4 + 3.5**4) / 2) ** 0.5
    got = slas_advantages(rewards, ids, replace(RAW, gamma=1.0, order="power_then_normalise")).advantages
    torch.testing.assert_close(got, sign / (s + 1e-4), rtol=1e-14, atol=0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("order", ["normalise_then_power", "power_then_normalise"])
@pytest.mark.parametrize("recentre", ["none", "group", "batch"])
def test_zero_std_groups_stay_zero(gamma, order, recentre):
    rewards = torch.tensor([0.1, 1.0, 0.1, 5.0, 2.0, 0.1, 0.4, 0.7])
    ids = torch.tensor([3, 9, 3, 4, 9, 3, 8, 8])  # 3: constant, 4: singleton, 9 and 8: signal
    out = slas_advantages(rewards, ids, ShapingConfig(gamma=gamma, order=order, recentre=recentre))
    adv = out.advantages
    assert adv[[0, 2, 3, 5]].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert adv[1] < 0 < adv[4] and adv[6] < 0 < adv[7]
    assert out.zero_std_fraction == pytest.approx(0.5)


# --- sign, order, amplification -------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["normalise_then_power", "power_then_normalise"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_sign_and_within_batch_order_preserved(order, gamma):
    rewards, ids = _batch(n=64, seed=3)
    lin = slas_advantages(rewards, ids, replace(RAW, order=order)).advantages
    out = slas_advantages(rewards, ids, replace(RAW, order=order, gamma=gamma)).advantages
    assert not torch.allclose(out, lin)  # γ does something
    assert torch.equal(torch.sign(out), torch.sign(lin))
    # strictly monotone map of Â: every pair keeps its order (the random rewards have no ties)
    d_lin = lin[:, None] - lin[None, :]
    d_out = out[:, None] - out[None, :]
    assert torch.equal(torch.sign(d_lin), torch.sign(d_out))


def test_normalise_then_power_amplifies_above_one_and_suppresses_below():
    rewards, ids = _batch(n=64, seed=4)
    lin = slas_advantages(rewards, ids, RAW).advantages
    out = slas_advantages(rewards, ids, replace(RAW, gamma=1.0)).advantages
    big, small = lin.abs() > 1, (lin.abs() < 1) & (lin != 0)
    assert big.any() and small.any()
    assert (out.abs()[big] > lin.abs()[big]).all() and (out.abs()[small] < lin.abs()[small]).all()
    torch.testing.assert_close(out, lin * lin.abs(), rtol=1e-15, atol=0)


def test_power_function():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(power(x, 1.0), torch.tensor([-4.0, -0.25, 0.0, 0.25, 4.0], dtype=torch.float64))
    assert torch.equal(power(x, 0.0), x)
    assert power(x, 0.5)[2].item() == 0.0


# --- scale behaviour (derivation in the module docstring) -----------------------------------------------------------


@pytest.mark.parametrize("order", ["normalise_then_power", "power_then_normalise"])
@pytest.mark.parametrize("sigma_b_of", ["raw_rewards", "centred"])
@pytest.mark.parametrize("k", [1e-3, 3.0, 1e3])
def test_both_orders_scale_invariant_without_eps(order, sigma_b_of, k):
    rewards, ids = _batch(seed=5)
    cfg = ShapingConfig(gamma=1.0, order=order, sigma_b_of=sigma_b_of, eps=0.0, clip=None)
    a = slas_advantages(rewards, ids, cfg).advantages
    b = slas_advantages(k * rewards, ids, cfg).advantages
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    # a shift r ↦ r + c leaves it unchanged too (centring; the raw std and p(r − mean) ignore it)
    torch.testing.assert_close(slas_advantages(rewards + 7.0, ids, cfg).advantages, a, rtol=1e-9, atol=1e-9)
    # a non-affine reward change is not an invariance: the test can fail
    assert not torch.allclose(slas_advantages(rewards**2, ids, cfg).advantages, a, rtol=1e-3)


def test_eps_breaks_scale_invariance_only_at_small_reward_scales():
    rewards, ids = _batch(seed=6)
    cfg = ShapingConfig(gamma=1.0, clip=None)  # eps 1e-4, σ_B ≈ 0.3
    a = slas_advantages(rewards, ids, cfg).advantages
    torch.testing.assert_close(slas_advantages(10 * rewards, ids, cfg).advantages, a, rtol=2e-3, atol=0)
    tiny = slas_advantages(1e-4 * rewards, ids, cfg).advantages  # σ_B ≈ 3e-5 < eps
    assert (tiny.abs().max() / a.abs().max()) < 0.2


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_power_then_normalise_has_unit_batch_std_for_every_gamma(gamma):
    rewards, ids = _batch(seed=7)
    cfg = ShapingConfig(gamma=gamma, order="power_then_normalise", sigma_b_of="centred", eps=0.0, clip=None)
    adv = slas_advantages(rewards, ids, cfg).advantages
    assert adv.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-12)
    ntp = slas_advantages(rewards, ids, replace(cfg, order="normalise_then_power")).advantages
    if gamma == 0.0:  # the orders agree at γ = 0
        torch.testing.assert_close(adv, ntp, rtol=1e-12, atol=1e-12)
    else:  # normalise_then_power changes the overall scale with γ
        assert abs(ntp.std(unbiased=False).item() - 1.0) > 1e-2
        assert not torch.allclose(adv, ntp, rtol=1e-3)


def test_orders_agree_at_gamma0_with_raw_sigma():
    rewards, ids = _batch(seed=8)
    a = slas_advantages(rewards, ids, RAW).advantages
    b = slas_advantages(rewards, ids, replace(RAW, order="power_then_normalise")).advantages
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- re-centring and clip -------------------------------------------------------------------------------------------


def _group_means(adv, ids):
    return torch.stack([adv[ids == g].mean() for g in ids.unique()])


def test_recentre_group_and_batch_means_zero():
    rewards, ids = _batch(n=60, groups=5, seed=9)
    rewards[ids == ids[0]] = 0.25  # a zero-std group
    base = ShapingConfig(gamma=1.0, clip=None)
    plain = slas_advantages(rewards, ids, base).advantages
    assert _group_means(plain, ids).abs().max() > 1e-3 and plain.mean().abs() > 1e-4  # γ > 0 breaks Σ Ã = 0
    grp = slas_advantages(rewards, ids, replace(base, recentre="group")).advantages
    assert _group_means(grp, ids).abs().max() < 1e-12
    bat = slas_advantages(rewards, ids, replace(base, recentre="batch")).advantages
    assert abs(bat.mean().item()) < 1e-12
    assert _group_means(bat, ids).abs().max() > 1e-3  # batch re-centring leaves group means non-zero
    assert (bat[ids == ids[0]] == 0).all()
    # batch re-centring subtracts one constant from the rows that carry signal
    sig = ids != ids[0]
    diff = (plain - bat)[sig]
    torch.testing.assert_close(diff, torch.full_like(diff, diff[0].item()), rtol=0, atol=1e-12)


def test_clip_is_applied_last():
    rewards, ids = _batch(n=60, groups=5, seed=10)
    unclipped_cfg = ShapingConfig(gamma=1.0, clip=None, recentre="group")
    unclipped = slas_advantages(rewards, ids, unclipped_cfg).advantages
    c = 0.5 * unclipped.abs().max().item()
    out = slas_advantages(rewards, ids, replace(unclipped_cfg, clip=c))
    assert torch.equal(out.advantages, unclipped.clamp(-c, c))
    assert out.max_abs == pytest.approx(c)
    assert out.clip_fraction == pytest.approx((unclipped.abs() > c).double().mean().item())
    assert 0 < out.clip_fraction < 1


def test_default_clip_is_five():
    rewards = torch.tensor([0.0] * 15 + [1.0])  # one outlier: Â ≈ 3.87, Ã = Â^1.5 ≈ 7.6 > 5 at γ = 0.5
    out = slas_advantages(rewards, [0] * 16)
    assert out.advantages.max().item() == 5.0 and out.clip_fraction == pytest.approx(1 / 16)
    assert slas_advantages(rewards, [0] * 16, replace(ShapingConfig(), clip=None)).advantages.max() > 7


# --- schedule -------------------------------------------------------------------------------------------------------


def test_gamma_schedule_endpoints_and_shape():
    const = ShapingConfig(gamma=0.7)
    assert gamma_at(const, 0, 10) == 0.7 and gamma_at(const, 50, 10) == 0.7
    lin = ShapingConfig(gamma=0.0, gamma_schedule="linear", gamma_end=1.0)
    assert gamma_at(lin, 0, 100) == 0.0 and gamma_at(lin, 100, 100) == 1.0 and gamma_at(lin, 250, 100) == 1.0
    assert gamma_at(lin, 50, 100) == pytest.approx(0.5) and gamma_at(lin, 25, 100) == pytest.approx(0.25)
    cos = ShapingConfig(gamma=1.0, gamma_schedule="cosine", gamma_end=0.2)
    assert gamma_at(cos, 0, 8) == pytest.approx(1.0, abs=1e-15) and gamma_at(cos, 8, 8) == pytest.approx(0.2)
    assert gamma_at(cos, 99, 8) == pytest.approx(0.2)
    assert gamma_at(cos, 4, 8) == pytest.approx(0.6)
    assert gamma_at(cos, 2, 8) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert gamma_at(cos, 2, 8) > 1.0 - 0.8 * 0.25  # cosine stays near γ_0 longer than linear
    with pytest.raises(ValueError, match="total"):
        gamma_at(lin, 0, 0)
    with pytest.raises(ValueError, match="iteration"):
        gamma_at(lin, -1, 10)


def test_gamma_override_matches_config_gamma():
    rewards, ids = _batch(seed=11)
    cfg = ShapingConfig(gamma=0.0, gamma_schedule="linear", gamma_end=1.0, clip=None)
    g = gamma_at(cfg, 3, 4)
    a = slas_advantages(rewards, ids, cfg, gamma=g)
    b = slas_advantages(rewards, ids, ShapingConfig(gamma=0.75, clip=None))
    assert a.gamma == 0.75 and torch.equal(a.advantages, b.advantages)
    assert not torch.equal(slas_advantages(rewards, ids, cfg).advantages, a.advantages)
    with pytest.raises(ValueError, match="gamma"):
        slas_advantages(rewards, ids, cfg, gamma=-0.1)


# --- config errors, inputs, stats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gamma": -0.5}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"order": "power_first"}, "order"),
        ({"sigma_b_of": "raw"}, "sigma_b_of"),
        ({"recentre": "prompt"}, "recentre"),
        ({"clip": 0.0}, "clip"),
        ({"clip": -5.0}, "clip"),
        ({"eps": -1e-4}, "eps"),
        ({"ddof": 2}, "ddof"),
        ({"ddof": True}, "ddof"),
        ({"stats_scope": "local"}, "stats_scope"),
        ({"gamma_schedule": "exp"}, "gamma_schedule"),
        ({"gamma_schedule": "linear"}, "gamma_end"),
        ({"gamma_end": 1.0}, "gamma_end"),
        ({"gamma_schedule": "cosine", "gamma_end": -1.0}, "gamma_end"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"ShapingConfig\.{field}\b") as info:
        ShapingConfig(**kwargs)
    assert isinstance(info.value, ValueError)


def test_good_config_and_defaults():
    cfg = ShapingConfig()
    assert (cfg.gamma, cfg.order, cfg.sigma_b_of, cfg.recentre, cfg.clip, cfg.eps, cfg.ddof, cfg.stats_scope) == (
        0.5, "normalise_then_power", "raw_rewards", "none", 5.0, 1e-4, 0, "global")
    ShapingConfig(gamma_schedule="constant", gamma=0.3, gamma_end=0.3)  # a constant schedule may name its own end


def test_inputs_and_stats():
    out = slas_advantages(torch.tensor([1, 2, 3, 5]), [0, 0, 1, 1], ShapingConfig(gamma=1.0, clip=None))
    assert isinstance(out, SLASOutput) and out.advantages.dtype == torch.float32
    assert out.mean_abs == pytest.approx(out.advantages.abs().mean().item(), rel=1e-6)
    assert out.max_abs == pytest.approx(out.advantages.abs().max().item(), rel=1e-6)
    stats = out.stats()
    assert set(stats) == {"zero_std_fraction", "mean_group_std", "mean_abs", "max_abs", "clip_fraction", "sigma_b",
                          "gamma"}
    assert stats["gamma"] == 1.0 and stats["zero_std_fraction"] == 0.0
    with pytest.raises(ValueError, match="rewards"):
        slas_advantages(torch.ones(2, 2), [0, 0])
    with pytest.raises(ValueError, match="group_ids"):
        slas_advantages(torch.ones(3), [0, 0])
    with pytest.raises(ValueError, match="group_ids"):
        slas_advantages(torch.ones(2), torch.tensor([0.0, 1.0]))
    all_equal = slas_advantages(torch.full((6,), 0.5), [0, 0, 0, 1, 1, 1], ShapingConfig(eps=0.0))
    assert all_equal.advantages.tolist() == [0.0] * 6 and all_equal.zero_std_fraction == 1.0


# --- two real processes over gloo -----------------------------------------------------------------------------------

# A global batch of 16 over 2 ranks; four groups of four copies shuffled over ranks (Flow-GRPO's
# DistributedKRepeatSampler), so every group straddles the ranks; group 5 is constant. Rank 1 holds the larger
# rewards, so per-rank statistics differ from the global ones.
GLOBAL_REWARDS = torch.tensor(
    [0.1, 0.5, 0.2, 0.3, 0.4, 0.05, 0.3, 0.15, 0.9, 2.0, 1.3, 0.3, 1.7, 0.3, 1.1, 2.4], dtype=torch.float64)
GLOBAL_IDS = torch.tensor([1, 2, 3, 5, 1, 2, 5, 3, 1, 2, 3, 5, 3, 5, 2, 1])
DIST_CONFIGS = {
    "default": ShapingConfig(),
    "linear": ShapingConfig(gamma=0.0, clip=None),
    "ptn_centred": ShapingConfig(gamma=1.0, order="power_then_normalise", sigma_b_of="centred", clip=None),
    "recentre_group": ShapingConfig(gamma=1.0, recentre="group", clip=1.5),
    "recentre_batch_ddof1": ShapingConfig(gamma=0.5, recentre="batch", ddof=1, eps=1e-8, clip=None),
}


def _worker(rank: int, world: int, result_dir: str) -> None:
    local = slice(rank * 8, (rank + 1) * 8)
    rewards, ids = GLOBAL_REWARDS[local], GLOBAL_IDS[local]
    results = {}
    for name, cfg in DIST_CONFIGS.items():
        results[name] = slas_advantages(rewards, ids, cfg)
        results[name + "/per_rank"] = slas_advantages(rewards, ids, replace(cfg, stats_scope="per_rank"))
    torch.save({k: (v.advantages, v.stats()) for k, v in results.items()}, os.path.join(result_dir, f"{rank}.pt"))


@pytest.fixture(scope="module")
def two_rank_results() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        run_local_group(_worker, 2, tmp)
        return [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]


@pytest.mark.parametrize("name", list(DIST_CONFIGS))
def test_two_process_gloo_global_equals_single_process(two_rank_results, name):
    single = slas_advantages(GLOBAL_REWARDS, GLOBAL_IDS, DIST_CONFIGS[name])
    got = torch.cat([res[name][0] for res in two_rank_results])
    assert torch.equal(got, single.advantages)
    for res in two_rank_results:
        assert res[name][1] == single.stats()  # global statistics, identical on both ranks


@pytest.mark.parametrize("name", list(DIST_CONFIGS))
def test_two_process_gloo_per_rank_differs_from_global(two_rank_results, name):
    cfg = replace(DIST_CONFIGS[name], stats_scope="per_rank")
    for rank, res in enumerate(two_rank_results):
        local = slice(rank * 8, (rank + 1) * 8)
        alone = slas_advantages(GLOBAL_REWARDS[local], GLOBAL_IDS[local], cfg)
        assert torch.equal(res[name + "/per_rank"][0], alone.advantages)
        assert not torch.allclose(res[name + "/per_rank"][0], res[name][0], rtol=1e-3)
    assert two_rank_results[0][name + "/per_rank"][1] != two_rank_results[1][name + "/per_rank"][1]


def test_single_process_scopes_agree_without_process_group():
    assert not dist.is_initialized()
    rewards, ids = _batch(seed=12)
    a = slas_advantages(rewards, ids, ShapingConfig(stats_scope="global"))
    b = slas_advantages(rewards, ids, ShapingConfig(stats_scope="per_rank"))
    assert torch.equal(a.advantages, b.advantages) and a.stats() == b.stats()
