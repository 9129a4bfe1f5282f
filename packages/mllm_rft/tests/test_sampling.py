"""DAPO dynamic sampling and overlong filtering with deterministic fake generators (mllm_rft.md §2)."""

from dataclasses import dataclass

import pytest
import torch

from mllm_rft.sampling import DynamicSampler, filter_groups, overlong_mask


# ------------------------------------------------------------------------------------------------------ filter_groups
def test_filter_groups_drops_all_equal():
    keep = filter_groups([[1, 1, 1], [0, 0, 0], [0, 1, 0], [0.5], [0.2, 0.2, 0.7]])
    assert keep.dtype == torch.bool
    assert keep.tolist() == [False, False, True, False, True]  # all correct, all wrong, varied, singleton, varied


def test_filter_groups_tensor_and_exact_equality():
    r = torch.tensor([[1.0, 1.0], [0.0, 1e-9], [0.3, 0.3]])
    assert filter_groups(r).tolist() == [False, True, False]  # exact: a 1e-9 spread is kept
    assert filter_groups(r, atol=1e-6).tolist() == [False, False, False]  # tolerance drops the near-tie


def test_filter_groups_mean_range():
    groups = [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]  # means 0.75, 0.25, 0.5
    assert filter_groups(groups, mean_range=(0.01, 0.99)).tolist() == [True, True, True]
    assert filter_groups(groups, mean_range=(0.3, 0.8)).tolist() == [True, False, True]
    assert filter_groups(groups, mean_range=(0.5, 0.8)).tolist() == [True, False, False]  # ends exclusive


def test_filter_groups_errors():
    with pytest.raises(ValueError, match="non-finite"):
        filter_groups([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="no rewards"):
        filter_groups([[1.0, 0.0], []])
    with pytest.raises(ValueError, match="groups, completions"):
        filter_groups(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="atol"):
        filter_groups([[0.0, 1.0]], atol=-1.0)


# ----------------------------------------------------------------------------------------------------- DynamicSampler
class FakeGenerator:
    """Deterministic: group k (a running counter) has varied rewards iff varied(k); records the requested sizes."""

    def __init__(self, varied=lambda k: k % 2 == 0, factor: int = 1):
        self.varied, self.factor = varied, factor
        self.k, self.requests = 0, []

    def __call__(self, n):
        self.requests.append(n)
        out = []
        for _ in range(n * self.factor):
            rewards = [0.0, 1.0, 1.0] if self.varied(self.k) else [1.0, 1.0, 1.0]
            out.append({"id": self.k, "rewards": rewards})
            self.k += 1
        return out


def ids(result):
    return [g["id"] for g in result.groups]


def test_dynamic_sampler_fills_the_batch():
    gen = FakeGenerator()  # even ids varied
    res = DynamicSampler(gen, batch_groups=4, max_rounds=10).sample()
    # round 1 asks 4: ids 0–3 → keep 0, 2; round 2 asks 2: 4, 5 → keep 4; round 3 asks 1: 6 → keep 6
    assert gen.requests == [4, 2, 1]
    assert ids(res) == [0, 2, 4, 6]
    assert res.full and res.rounds == 3 and res.generated == 7 and res.dropped == 3 and res.truncated == 0
    assert res.drop_fraction == pytest.approx(3 / 7)
    m = res.metrics()
    assert m["dynamic_sampling/rounds"] == 3.0 and m["dynamic_sampling/kept_groups"] == 4.0
    assert m["dynamic_sampling/drop_fraction"] == pytest.approx(3 / 7) and m["dynamic_sampling/full"] == 1.0


def test_dynamic_sampler_stops_at_round_limit():
    gen = FakeGenerator(varied=lambda k: False)  # every group all-correct
    res = DynamicSampler(gen, batch_groups=4, max_rounds=3).sample()
    assert gen.requests == [4, 4, 4]
    assert res.groups == [] and not res.full and res.rounds == 3
    assert res.generated == 12 and res.dropped == 12 and res.drop_fraction == 1.0

    gen = FakeGenerator(varied=lambda k: k == 1)  # one useful group ever
    res = DynamicSampler(gen, batch_groups=3, max_rounds=2).sample()
    assert ids(res) == [1] and not res.full and res.rounds == 2 and res.metrics()["dynamic_sampling/full"] == 0.0


def test_dynamic_sampler_never_exceeds_batch_truncates_extras():
    gen = FakeGenerator(varied=lambda k: True)
    res = DynamicSampler(gen, batch_groups=4, max_rounds=5, groups_per_round=10).sample()
    assert gen.requests == [10]  # fixed round size (verl's gen_batch_size)
    assert ids(res) == [0, 1, 2, 3] and res.truncated == 6 and res.full and res.rounds == 1 and res.dropped == 0

    gen = FakeGenerator(varied=lambda k: k % 3 != 2, factor=3)  # returns 3× what it is asked for
    res = DynamicSampler(gen, batch_groups=5, max_rounds=5).sample()
    # round 1 asks 5, gets ids 0–14 → 10 pass (all but 2, 5, 8, 11, 14); first 5 kept, 5 truncated
    assert ids(res) == [0, 1, 3, 4, 6] and len(res.groups) == 5 and res.truncated == 5 and res.rounds == 1


def test_dynamic_sampler_empty_rounds_and_group_access():
    calls = []

    def empty(n):
        calls.append(n)
        return []

    res = DynamicSampler(empty, batch_groups=2, max_rounds=4).sample()
    assert calls == [2, 2, 2, 2] and res.rounds == 4 and res.generated == 0 and res.drop_fraction == 0.0

    @dataclass
    class Group:
        rewards: list

    res = DynamicSampler(lambda n: [Group([0, 1]) for _ in range(n)], 2, 1).sample()
    assert res.full and all(isinstance(g, Group) for g in res.groups)

    res = DynamicSampler(lambda n: [("p", [1, 1]), ("q", [0, 1])], 1, 3, rewards_fn=lambda g: g[1]).sample()
    assert res.groups == [("q", [0, 1])] and res.dropped == 1

    with pytest.raises(TypeError, match="rewards_fn"):
        DynamicSampler(lambda n: [object()], 1, 1).sample()


def test_dynamic_sampler_passes_filter_settings():
    def gen(n):
        return [{"rewards": [1.0, 1.0, 1.0, 0.0]} for _ in range(n)]  # mean 0.75, varied

    assert DynamicSampler(gen, 2, 2).sample().full
    res = DynamicSampler(gen, 2, 2, mean_range=(0.0, 0.5)).sample()
    assert not res.full and res.dropped == 4
    assert not DynamicSampler(gen, 2, 2, atol=1.0).sample().full  # a spread of 1 is not > 1


@pytest.mark.parametrize(
    "kwargs", [{"batch_groups": 0}, {"max_rounds": 0}, {"batch_groups": 1.5}, {"groups_per_round": 0}]
)
def test_dynamic_sampler_validates(kwargs):
    args = {"generate_fn": lambda n: [], "batch_groups": 2, "max_rounds": 2, **kwargs}
    with pytest.raises(ValueError):
        DynamicSampler(**args)


# ------------------------------------------------------------------------------------------------------ overlong_mask
def test_overlong_mask():
    assert overlong_mask([3, 10, 12, 9], max_len=10).tolist() == [True, False, False, True]
    assert overlong_mask(torch.tensor([3, 10, 12, 9]), 10, finished=[False, True, False, False]).tolist() == [
        True, True, False, True,  # EOS exactly at the limit is kept when `finished` says so
    ]
    assert overlong_mask([], 10).tolist() == []
    token_mask = torch.ones(2, 3)
    assert (token_mask * overlong_mask([10, 2], 10)[:, None]).sum().item() == 3.0


def test_overlong_mask_errors():
    with pytest.raises(ValueError, match="integer"):
        overlong_mask([1.5, 2.0], 10)
    with pytest.raises(ValueError, match="max_len"):
        overlong_mask([1, 2], 0)
    with pytest.raises(ValueError, match=">= 0"):
        overlong_mask([-1, 2], 10)
    with pytest.raises(ValueError, match="finished"):
        overlong_mask([1, 2], 10, finished=[True])
