"""Tests for shared.advantages: hand values, numpy std conventions, a naive loop, and a real 2-process gloo run."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist

from shared.advantages import distributed_group_advantages, gather_rewards, group_advantages
from shared.training.distributed import run_local_group


def naive(rewards, ids, std="group", eps=1e-4, ddof=0, clip=None):
    """Reference: a plain python loop with numpy, as Flow-GRPO's stat tracker does it."""
    rewards = np.asarray(rewards, dtype=np.float64)
    ids = np.asarray(ids)
    out = np.zeros_like(rewards)
    batch_std = np.std(rewards, ddof=ddof) if len(rewards) > ddof else 0.0
    for g in np.unique(ids):
        sel = ids == g
        r = rewards[sel]
        group_std = np.std(r, ddof=ddof) if len(r) > ddof else 0.0
        if np.all(r == r[0]):
            out[sel] = 0.0
            continue
        scale = {"group": group_std + eps, "batch": batch_std + eps, "none": 1.0}[std]
        out[sel] = (r - r.mean()) / scale
    return out if clip is None else np.clip(out, -clip, clip)


def test_zero_mean_per_group():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(24, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 5, (24,), generator=gen)
    for std in ("group", "batch", "none"):
        adv = group_advantages(rewards, ids, std=std).advantages
        for g in ids.unique():
            assert abs(adv[ids == g].sum().item()) < 1e-10


def test_hand_values_each_mode_and_ddof():
    # group 7: [1, 3] (mean 2, Δ = ∓1), group 2: [0, 0, 6] (mean 2, Δ = −2, −2, 4)
    rewards = torch.tensor([1.0, 0.0, 3.0, 0.0, 6.0], dtype=torch.float64)
    ids = [7, 2, 7, 2, 2]
    # population std: group 7 → 1, group 2 → √((4 + 4 + 16)/3) = √8; n − 1 std: √2 and √12
    out = group_advantages(rewards, ids, std="group", eps=0.0)
    s8 = 8**0.5
    expected = torch.tensor([-1.0, -2 / s8, 1.0, -2 / s8, 4 / s8], dtype=torch.float64)
    torch.testing.assert_close(out.advantages, expected)
    out = group_advantages(rewards, ids, std="group", eps=0.0, unbiased=True)
    s2, s12 = 2**0.5, 12**0.5
    expected = torch.tensor([-1 / s2, -2 / s12, 1 / s2, -2 / s12, 4 / s12], dtype=torch.float64)
    torch.testing.assert_close(out.advantages, expected)
    assert out.mean_group_std == pytest.approx((s2 + s12) / 2)
    # batch std of all raw rewards [1, 0, 3, 0, 6]: mean 2, squares sum 1 + 4 + 1 + 4 + 16 = 26
    # → √(26/5) = √5.2 (ddof 0), √(26/4) = √6.5 (ddof 1)
    for unbiased, var in ((False, 5.2), (True, 6.5)):
        out = group_advantages(rewards, ids, std="batch", eps=1e-4, unbiased=unbiased)
        expected = torch.tensor([-1.0, -2.0, 1.0, -2.0, 4.0], dtype=torch.float64) / (var**0.5 + 1e-4)
        torch.testing.assert_close(out.advantages, expected)
        assert var**0.5 == pytest.approx(np.std([1, 0, 3, 0, 6], ddof=int(unbiased)))
    out = group_advantages(rewards, ids, std="none")
    torch.testing.assert_close(out.advantages, torch.tensor([-1.0, -2.0, 1.0, -2.0, 4.0], dtype=torch.float64))
    # eps enters the group denominator: group 7 with eps 1: Δ/(1 + 1) = ∓0.5
    out = group_advantages(rewards, ids, std="group", eps=1.0)
    assert out.advantages[0].item() == pytest.approx(-0.5)


@pytest.mark.parametrize("std", ["group", "batch", "none"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_matches_numpy_loop_on_random_data(std, unbiased):
    gen = torch.Generator().manual_seed(1)
    rewards = torch.rand(60, generator=gen, dtype=torch.float64) * 4
    ids = torch.randint(-3, 40, (60,), generator=gen) * 17  # sparse, negative, unsorted ids
    rewards[ids == ids[0]] = 0.5  # one constant group
    out = group_advantages(rewards, ids, std=std, unbiased=unbiased, eps=1e-4, clip=3.0)
    ref = naive(rewards.numpy(), ids.numpy(), std=std, ddof=int(unbiased), clip=3.0)
    np.testing.assert_allclose(out.advantages.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_clip():
    rewards = torch.tensor([0.0, 0.0, 0.0, 10.0])
    adv = group_advantages(rewards, [0, 0, 0, 0], std="none").advantages  # Δ = [−2.5, −2.5, −2.5, 7.5]
    torch.testing.assert_close(adv, torch.tensor([-2.5, -2.5, -2.5, 7.5]))
    clipped = group_advantages(rewards, [0, 0, 0, 0], std="none", clip=5.0).advantages
    torch.testing.assert_close(clipped, torch.tensor([-2.5, -2.5, -2.5, 5.0]))
    clipped = group_advantages(rewards, [0, 0, 0, 0], std="none", clip=2.0).advantages
    torch.testing.assert_close(clipped, torch.tensor([-2.0, -2.0, -2.0, 2.0]))


def test_zero_std_groups_and_singletons():
    # groups: a = [0.1, 0.1, 0.1] (constant; float mean ≠ 0.1 exactly), b = [1, 2], c = [5] (singleton)
    rewards = torch.tensor([0.1, 1.0, 0.1, 5.0, 2.0, 0.1])
    ids = torch.tensor([3, 9, 3, 4, 9, 3])
    for unbiased in (False, True):
        out = group_advantages(rewards, ids, std="group", unbiased=unbiased)
        adv = out.advantages
        assert adv[[0, 2, 5]].tolist() == [0.0, 0.0, 0.0] and adv[3].item() == 0.0
        assert torch.isfinite(adv).all() and adv[1].item() < 0 < adv[4].item()
        assert out.zero_std_fraction == pytest.approx(2 / 3)  # 2 of 3 groups carry no signal
    out = group_advantages(rewards, ids, std="group", unbiased=False)
    assert out.mean_group_std == pytest.approx((0 + 0.5 + 0) / 3, rel=1e-6)  # population std of [1, 2] is 0.5
    assert group_advantages(torch.ones(4), [0, 0, 1, 1]).zero_std_fraction == 1.0


def test_dtypes_and_validation():
    out = group_advantages(torch.tensor([1, 2, 3, 4]), [0, 0, 1, 1])  # integer rewards → float32
    assert out.advantages.dtype == torch.float32
    assert group_advantages(torch.tensor([1.0, 2.0], dtype=torch.float16), [0, 0]).advantages.dtype == torch.float16
    with pytest.raises(ValueError, match="std"):
        group_advantages(torch.ones(2), [0, 0], std="global")
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.ones(2), [0, 0, 1])
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.ones(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="clip"):
        group_advantages(torch.ones(2), [0, 0], clip=0.0)
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.ones(2, 2), [0, 0])


def test_gather_is_noop_without_process_group():
    assert not dist.is_initialized()
    rewards = torch.tensor([1.0, 2.0, 3.0])
    all_r, all_ids, local = gather_rewards(rewards, [5, 5, 6])
    assert torch.equal(all_r, rewards) and all_ids.tolist() == [5, 5, 6] and local == slice(0, 3)
    a = distributed_group_advantages(rewards, [5, 5, 6], std="batch", unbiased=True)
    b = group_advantages(rewards, [5, 5, 6], std="batch", unbiased=True)
    assert torch.equal(a.advantages, b.advantages) and a.zero_std_fraction == b.zero_std_fraction


# --- two real processes over gloo --------------------------------------------------------------------

# Global batch of 8 over 2 ranks, groups of 4 copies shuffled over ranks (Flow-GRPO's DistributedKRepeatSampler):
GLOBAL_REWARDS = torch.tensor([0.3, 1.2, -0.5, 0.3, 2.0, 0.7, 0.3, 0.9], dtype=torch.float64)
GLOBAL_IDS = torch.tensor([11, 4, 11, 11, 4, 4, 11, 4])  # both groups straddle the ranks


def _worker(rank: int, world: int, result_dir: str, uneven: bool) -> None:
    local = slice(rank * 4, (rank + 1) * 4)
    rewards, ids = GLOBAL_REWARDS[local], GLOBAL_IDS[local]
    if uneven and rank == 1:
        rewards, ids = rewards[:3], ids[:3]
    try:
        out = distributed_group_advantages(rewards, ids, std="group", unbiased=True, eps=1e-8)
        torch.save({"adv": out.advantages, "zero": out.zero_std_fraction, "std": out.mean_group_std},
                   os.path.join(result_dir, f"rank{rank}.pt"))
    except ValueError as err:
        torch.save({"error": str(err)}, os.path.join(result_dir, f"rank{rank}.pt"))


def _run_two_ranks(uneven: bool) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        run_local_group(_worker, 2, tmp, uneven)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]


def test_two_process_gloo_equals_single_process():
    results = _run_two_ranks(uneven=False)
    single = group_advantages(GLOBAL_REWARDS, GLOBAL_IDS, std="group", unbiased=True, eps=1e-8)
    torch.testing.assert_close(torch.cat([r["adv"] for r in results]), single.advantages, rtol=0, atol=0)
    for r in results:
        assert r["zero"] == single.zero_std_fraction and r["std"] == single.mean_group_std
    # per-rank computation (DanceGRPO-style) would differ here, so the gather matters
    per_rank = group_advantages(GLOBAL_REWARDS[:4], GLOBAL_IDS[:4], std="group", unbiased=True, eps=1e-8)
    assert not torch.allclose(per_rank.advantages, single.advantages[:4])


def test_two_process_gloo_rejects_uneven_local_sizes():
    results = _run_two_ranks(uneven=True)
    for r in results:
        assert "equal local batch sizes" in r["error"]


def test_batch_std_and_zero_std_rows_by_hand():
    from shared.advantages import batch_std, zero_std_rows

    x = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)  # mean 3, squared deviations 4, 1, 0, 9
    assert batch_std(x).item() == pytest.approx((14 / 4) ** 0.5)
    assert batch_std(x, ddof=1).item() == pytest.approx((14 / 3) ** 0.5)
    assert batch_std(x[:1], ddof=1).item() == 0.0
    rows = zero_std_rows(torch.tensor([0.3, 0.3, 0.1, 0.9, 0.5]), [7, 7, 2, 2, 4])
    assert rows.tolist() == [True, True, False, False, True]  # a singleton group has zero std too
