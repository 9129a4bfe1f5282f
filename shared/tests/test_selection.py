"""Tests for shared.selection: the anchors' step counts and the selectors' contracts."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from shared.selection import chunks, in_order, random_subset, window


def test_in_order_flow_grpo_counts():
    assert in_order(10, 0.99) == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # SD3.5: ⌊9.9⌋ = 9, the last step never trained
    assert in_order(10, 1.0) == list(range(10))
    assert in_order(6, 0.5) == [0, 1, 2]
    assert in_order(3, 0.34) == [0]  # ⌊1.02⌋


def test_random_subset_dance_grpo_counts():
    gen = torch.Generator().manual_seed(0)
    picked = random_subset(16, 0.6, generator=gen)  # FLUX: drop last, ⌊15·0.6⌋ = 9
    assert len(picked) == 9 and len(set(picked)) == 9
    assert 15 not in picked and all(0 <= k < 15 for k in picked)
    assert sorted(random_subset(16, 1.0, generator=gen)) == list(range(15))
    assert sorted(random_subset(50, 1.0, drop_last=False, generator=gen)) == list(range(50))  # DDPO default


def test_random_subset_is_uniform_and_seeded():
    counts = Counter()
    gen = torch.Generator().manual_seed(1)
    for _ in range(2000):
        counts.update(random_subset(5, 0.5, generator=gen))  # 2 of the first 4
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(c / 4000 - 0.25) < 0.03 for c in counts.values())
    a = random_subset(16, 0.6, generator=torch.Generator().manual_seed(7))
    b = random_subset(16, 0.6, generator=torch.Generator().manual_seed(7))
    c = random_subset(16, 0.6, generator=torch.Generator().manual_seed(8))
    assert a == b and a != c
    assert a != sorted(a) or c != sorted(c)  # permutation order, not sorted


def test_window_flow_grpo_fast():
    gen = torch.Generator().manual_seed(2)
    starts = Counter()
    for _ in range(1000):
        w = window(10, 3, generator=gen)  # default range (0, 5): starts 0, 1, 2
        assert w == list(range(w[0], w[0] + 3))
        starts[w[0]] += 1
    assert set(starts) == {0, 1, 2} and all(abs(c / 1000 - 1 / 3) < 0.06 for c in starts.values())
    assert window(10, 4, (2, 6), generator=gen) == [2, 3, 4, 5]  # the only fit
    assert window(10, 10, (0, 10)) == list(range(10))


def test_chunks():
    expected = [[0, 1], [2, 3, 4], [5, 6, 7, 8], list(range(9, 16))]  # GCPO fixed [2, 3, 4, 7]
    assert chunks([2, 3, 4, 7]) == expected
    assert chunks([2, 3, 4, 7], num_steps=16) == expected
    assert chunks(boundaries=[0, 2, 5, 9, 16], num_steps=16) == expected
    assert chunks([16]) == [list(range(16))]
    assert chunks(boundaries=[3, 5]) == [[3, 4]]


def test_validation():
    with pytest.raises(ValueError, match="fraction"):
        in_order(10, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        in_order(10, 1.5)
    with pytest.raises(ValueError, match="fraction"):
        in_order(10, 0.05)  # selects nothing
    with pytest.raises(ValueError, match="num_steps"):
        in_order(0, 0.5)
    with pytest.raises(ValueError, match="drop_last"):
        random_subset(1, 1.0)
    with pytest.raises(ValueError, match="size"):
        window(10, 6)  # does not fit (0, 5)
    with pytest.raises(ValueError, match="size"):
        window(10, 0)
    with pytest.raises(ValueError, match="range_"):
        window(10, 2, (4, 12))
    with pytest.raises(ValueError, match="range_"):
        window(10, 2, (5, 5))
    with pytest.raises(ValueError, match="sizes"):
        chunks([2, 0, 3])
    with pytest.raises(ValueError, match="exactly one"):
        chunks([2], boundaries=[0, 2])
    with pytest.raises(ValueError, match="exactly one"):
        chunks()
    with pytest.raises(ValueError, match="increasing"):
        chunks(boundaries=[0, 3, 3])
    with pytest.raises(ValueError, match="num_steps"):
        chunks([2, 3], num_steps=6)
