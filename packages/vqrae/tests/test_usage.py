"""Code usage on constructed assignments: utilisation (incl. UniTok's 0.01/k), perplexity, dead codes, accumulation,
and a real 2-process gloo all-reduce."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist

from shared.training.distributed import run_local_group
from vqrae.usage import CodeUsage, usage_stats

K = 16


def test_uniform_over_all_codes():
    u = CodeUsage(K).update(torch.arange(K).repeat(3))
    assert u.perplexity() == pytest.approx(K)
    assert u.utilisation() == 1.0 and u.dead_codes() == 0 and u.total == 3 * K


def test_single_code():
    u = CodeUsage(K).update(torch.full((5, 7), 3))
    assert u.perplexity() == pytest.approx(1.0)
    assert u.utilisation() == 1 / K and u.dead_codes() == K - 1


def test_half_the_codes_uniformly():
    u = CodeUsage(K).update(torch.arange(0, K, 2).repeat(4))
    assert u.perplexity() == pytest.approx(K / 2)
    assert u.utilisation() == 0.5 and u.dead_codes() == K // 2


def test_non_uniform_hand_value():
    u = CodeUsage(4).update(torch.tensor([0, 0, 1, 2]))  # p = (1/2, 1/4, 1/4, 0): H = 1.5 ln 2
    assert u.perplexity() == pytest.approx(2**1.5)
    assert u.utilisation() == 0.75 and u.dead_codes() == 1


def test_threshold_in_units_of_one_over_k():
    # k = 4, frequencies (0.005, 0.495, 0.5, 0)
    u = CodeUsage(4).update(torch.tensor([0] + [1] * 99 + [2] * 100))
    assert u.utilisation() == 0.75                  # > 0
    assert u.utilisation(threshold=0.01) == 0.75     # UniTok: > 0.01/k = 0.0025
    assert u.utilisation(threshold=0.04) == 0.5      # > 0.01: code 0 drops out
    assert u.utilisation(threshold=2.0) == 0.0       # > 0.5


def test_accumulates_resets_and_matches_usage_stats():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(K, (30,), generator=g), torch.randint(K // 2, (2, 9), generator=g)
    u = CodeUsage(K).update(a).update(b)
    both = torch.cat([a, b.flatten()])
    assert torch.equal(u.counts, torch.bincount(both, minlength=K))
    assert u.as_dict("val/") == {f"val/{k}": v for k, v in usage_stats(both, K).items()}
    assert set(usage_stats(both, K)) == {"utilisation", "perplexity", "dead_codes", "tokens"}
    assert usage_stats(both, K, threshold=0.01)["utilisation"] == u.utilisation(0.01)
    u.reset()
    assert u.total == 0 and u.utilisation() == 0.0 and u.perplexity() == 0.0 and u.dead_codes() == K


def test_out_of_range_indices_and_bad_size():
    with pytest.raises(ValueError, match="codebook_size"):
        CodeUsage(4).update(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="codebook_size"):
        CodeUsage(4).update(torch.tensor([-1]))
    with pytest.raises(ValueError, match="codebook_size"):
        CodeUsage(0)


def test_all_reduce_is_a_no_op_without_process_group():
    assert not dist.is_initialized()
    u = CodeUsage(K).update(torch.arange(4))
    assert torch.equal(u.all_reduce().counts, torch.bincount(torch.arange(4), minlength=K))


# --- two real processes over gloo -----------------------------------------------------------------------------------

RANK_INDICES = [torch.tensor([0, 1, 1, 5, 5, 5, 9]), torch.tensor([1, 2, 9, 9, 15, 0, 0, 0, 3, 3])]


def _worker(rank: int, world: int, result_dir: str) -> None:
    u = CodeUsage(K).update(RANK_INDICES[rank])
    local = u.counts.clone()
    u.all_reduce()
    torch.save({"local": local, "global": u.counts, "stats": u.as_dict()}, os.path.join(result_dir, f"{rank}.pt"))


def test_two_process_gloo_all_reduce_equals_union():
    with tempfile.TemporaryDirectory() as tmp:
        run_local_group(_worker, 2, tmp)
        res = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]
    union = CodeUsage(K).update(torch.cat(RANK_INDICES))
    for rank, r in enumerate(res):
        assert torch.equal(r["local"], torch.bincount(RANK_INDICES[rank], minlength=K))
        assert torch.equal(r["global"], union.counts)
        assert r["stats"] == union.as_dict()
    assert not math.isclose(CodeUsage(K).update(RANK_INDICES[0]).perplexity(), union.perplexity())
