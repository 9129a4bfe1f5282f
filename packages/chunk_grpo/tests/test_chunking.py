"""Chunk sizes: fixed, uniform, our adaptive rule on constructed L1rel curves, and min_chunk merging.

Every expected list below is derived by hand in the comment above it, following the rule of
chunking.adaptive: split(segment, k) keeps ≤ max_chunk; else cut after transition t + ⌊(k−1)/2⌋ wherever
sign(d^k_{t−1}) ≠ sign(d^k_t) (t counted from the segment start; a boundary b means the left piece ends before
index b); no sign change or < 2 differences → midpoint cut, left half ⌈n/2⌉; recurse with k + 1; beyond max_order
midpoints only.
"""

from __future__ import annotations

import pytest
import torch

from chunk_grpo.chunking import _sign_change_cuts, adaptive, fixed, merge_small, to_steps, uniform

# ---------------------------------------------------------------------------------------------- fixed / uniform


def test_fixed_checks_the_sum_and_keeps_the_order():
    assert fixed([2, 3, 4, 7], 16) == [2, 3, 4, 7]
    with pytest.raises(ValueError, match="sum to 16, not num_steps=17"):
        fixed([2, 3, 4, 7], 17)
    with pytest.raises(ValueError, match="positive ints"):
        fixed([0, 16], 16)
    with pytest.raises(ValueError, match="positive ints"):
        fixed([], 16)


def test_uniform_puts_the_remainder_in_a_shorter_last_chunk():
    assert uniform(4, 16) == [4, 4, 4, 4]
    assert uniform(2, 16) == [2] * 8
    assert uniform(16, 16) == [16]
    assert uniform(4, 10) == [4, 4, 2]  # 10 = 2·4 + 2
    assert uniform(3, 8) == [3, 3, 2]
    assert uniform(20, 16) == [16]  # size ≥ T: one chunk
    with pytest.raises(ValueError, match="size"):
        uniform(0, 8)


def test_to_steps_lists_indices_high_noise_first():
    assert to_steps([2, 3, 4, 7]) == [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]]
    assert to_steps([1, 2], offset=3) == [[3], [4, 5]]


# ------------------------------------------------------------------------------------------ sign-change kernel


def test_cut_position_per_order_around_a_spike():
    spike = [0, 0, 0, 1, 0, 0, 0]
    # k=1: d1 = [0,0,1,−1,0,0]; leading zeros take the first nonzero sign (+), trailing zeros their left (−):
    # [+,+,+,−,−,−] → change at t=3 → cut after transition 3 → boundary 4 (ℓ_3, the maximum, closes the chunk)
    assert _sign_change_cuts(spike, 1) == [4]
    # k=2: d2 = [0,1,−2,1,0] → [+,+,−,+,+] → changes at t=2, 3 → cut after t + 0 → boundaries 3, 4
    assert _sign_change_cuts(spike, 2) == [3, 4]
    # k=3: d3 = [1,−3,3,−1] → changes at t=1, 2, 3 → cut after t + ⌊2/2⌋ = t + 1 → boundaries 3, 4, 5
    assert _sign_change_cuts(spike, 3) == [3, 4, 5]


def test_zero_differences_take_the_left_neighbours_sign():
    # d1 = [1, 0, −1]: the zero takes + from its left → [+,+,−] → change at t=2 → boundary 3 (right-sign would be 2)
    assert _sign_change_cuts([1, 2, 2, 1], 1) == [3]
    # a leading zero has no left neighbour and takes the first nonzero sign: d1 = [0, 1, −2] → [+,+,−] → boundary 3
    assert _sign_change_cuts([2, 2, 3, 1], 1) == [3]
    # all differences zero: no sign change
    assert _sign_change_cuts([5, 5, 5, 5], 1) == []
    # too short for the order: fewer than two differences
    assert _sign_change_cuts([0, 1, 3], 2) == []


# -------------------------------------------------------------------------------------------------- adaptive


def test_adaptive_monotone_linear_is_bisection():
    # ℓ_t = 16 − t, T = 16, max_chunk 4.
    # k=1 on [0,16): d1 all −1 → no change → midpoint 8 → [0,8), [8,16).
    # k=2 on [0,8): d2 all 0 → no change → midpoint 4 → [0,4), [4,8), both ≤ 4. Same for [8,16).
    assert adaptive([16 - t for t in range(16)]) == [4, 4, 4, 4]


def test_adaptive_monotone_convex_gives_the_left_half_the_extra_step():
    # ℓ_t = 2^(9−t), T = 10: differences of every order keep one sign, so only midpoint cuts.
    # k=1 on [0,10): midpoint (10+1)//2 = 5 → [0,5), [5,10).
    # k=2 on [0,5) (n = 5 > 4): d2 = [128, 64, 32] all + → midpoint (5+1)//2 = 3 → [0,3), [3,5). Same for [5,10).
    assert adaptive([2.0 ** (9 - t) for t in range(10)]) == [3, 2, 3, 2]


# single peak at t = 3 followed by a fall that is fast, then slow (an inflection at 5|6)
PEAK = [2, 4, 7, 10, 9, 7, 4, 2, 1, 0.5, 0.25, 0.125]


def test_adaptive_single_peak():
    # T = 12, max_chunk 4.
    # k=1 on [0,12): d1 = [2,3,3,−1,−2,−3,−2,−1,−.5,−.25,−.125] → change at t=3 → cut after 3 → [0,4), [4,12).
    #   [0,4): n = 4, kept.
    # k=2 on [4,12): ℓ = [9,7,4,2,1,.5,.25,.125], d1 = [−2,−3,−2,−1,−.5,−.25,−.125], d2 = [−1,1,1,.5,.25,.125]
    #   → change at t=1 → cut after (relative) 1 + 0 = 1 → boundary 4+2 = 6 → [4,6), [6,12).
    # k=3 on [6,12): ℓ = [4,2,1,.5,.25,.125], d3 = [−.5,−.25,−.125] no change → midpoint 3 → [6,9), [9,12).
    assert adaptive(PEAK) == [4, 2, 3, 3]


def test_adaptive_max_order_limits_sign_change_cuts():
    # max_order 1: as above to [0,4), [4,12); then k=2 > max_order → midpoint (8+1)//2 = 4 → [4,8), [8,12).
    assert adaptive(PEAK, max_order=1) == [4, 4, 4]
    # max_order 0: bisection only: 12 → 6 + 6 → 3 + 3 each.
    assert adaptive(PEAK, max_order=0) == [3, 3, 3, 3]


def test_adaptive_max_chunk():
    # max_chunk 6: [0,4) kept; [4,12) (n = 8) cut at 6 as above → [4,6) and [6,12) (n = 6 ≤ 6, kept).
    assert adaptive(PEAK, max_chunk=6) == [4, 2, 6]
    # max_chunk 12: the whole curve is one chunk.
    assert adaptive(PEAK, max_chunk=12) == [12]


def test_adaptive_peak_then_plateau():
    curve = [5, 8, 9, 7, 6, 6, 6, 6, 6, 6, 5, 4, 3, 2, 1, 0]
    # T = 16, max_chunk 4.
    # k=1 on [0,16): d1 = [3,1,−2,−1,0,0,0,0,0,−1,−1,−1,−1,−1,−1]; the plateau's zeros take − from the left →
    #   [+,+,−,−,…,−] → one change at t=2 → cut after 2 → [0,3) (kept), [3,16).
    # k=2 on [3,16): ℓ = [7,6,6,6,6,6,6,5,4,3,2,1,0], d1 = [−1,0,0,0,0,0,−1,−1,−1,−1,−1,−1],
    #   d2 = [1,0,0,0,0,−1,0,0,0,0,0] → [+,+,+,+,+,−,−,−,−,−,−] → change at t=5 → cut after 5 + 0 → boundary
    #   3+6 = 9 → [3,9), [9,16).
    # k=3 on [3,9): ℓ = [7,6,6,6,6,6], d3 = [−1,0,0] → [−,−,−] no change → midpoint 3 → [3,6), [6,9).
    # k=3 on [9,16): ℓ = [6,5,4,3,2,1,0] linear, d3 = 0 → midpoint (7+1)//2 = 4 → [9,13), [13,16).
    assert adaptive(curve) == [3, 3, 3, 4, 3]


NOISY = [10, 12, 9, 11, 8, 9, 7, 7.5, 6, 6.2]


def test_adaptive_noisy_cuts_at_every_extremum():
    # k=1: d1 = [2,−3,2,−3,1,−2,.5,−1.5,.2] alternates → changes at t = 1..8 → cuts after 1..8 →
    #   [0,2), [2,3), …, [9,10): every piece ≤ 4, kept.
    assert adaptive(NOISY) == [2, 1, 1, 1, 1, 1, 1, 1, 1]


def test_adaptive_min_chunk_merges_into_the_smaller_neighbour():
    # From [2,1,1,1,1,1,1,1,1]: the leftmost 1 (index 1) has neighbours 2 and 1 → merges right → [2,2,1,1,1,1,1,1];
    # likewise → [2,2,2,1,1,1,1] → [2,2,2,2,1,1] → [2,2,2,2,2].
    assert adaptive(NOISY, min_chunk=2) == [2, 2, 2, 2, 2]


def test_adaptive_too_short_for_the_order_cuts_at_the_midpoint():
    # max_chunk 2, ℓ = [0,1,3,6,10]: k=1 d1 all + → midpoint 3 → [0,3), [3,5) (kept).
    # k=2 on [0,3): d2 = [1] is a single difference (too short) → midpoint 2 → [0,2), [2,3).
    assert adaptive([0, 1, 3, 6, 10], max_chunk=2) == [2, 1, 2]
    # zeros take the left sign: ℓ = [1,2,2,1], max_chunk 2: d1 = [1,0,−1] → [+,+,−] → boundary 3 → [0,3), [3,4);
    # [0,3): k=2 has one difference → midpoint 2 → [2, 1].
    assert adaptive([1, 2, 2, 1], max_chunk=2) == [2, 1, 1]


def test_adaptive_accepts_tensors_and_checks_arguments():
    assert adaptive(torch.tensor(PEAK, dtype=torch.float64)) == [4, 2, 3, 3]
    assert sum(adaptive(torch.rand(37, generator=torch.Generator().manual_seed(0)))) == 37
    with pytest.raises(ValueError, match="empty"):
        adaptive([])
    with pytest.raises(ValueError, match="min_chunk=5 must not exceed max_chunk=4"):
        adaptive(PEAK, min_chunk=5)
    with pytest.raises(ValueError, match="NaN"):
        adaptive([1.0, float("nan"), 2.0])


def test_adaptive_random_curves_respect_max_chunk_and_sum():
    gen = torch.Generator().manual_seed(1)
    for t in (1, 2, 5, 16, 33):
        for max_chunk in (1, 3, 4):
            sizes = adaptive(torch.rand(t, generator=gen), max_chunk=max_chunk)
            assert sum(sizes) == t and all(1 <= s <= max_chunk for s in sizes)


# ------------------------------------------------------------------------------------------------ min_chunk


def test_merge_small_rules():
    # smallest first (leftmost on ties): index 0 (an end) merges right → [4,1,2,1]; index 1: neighbours 4 and 2 →
    # right → [4,3,1]; index 2 (the end) merges left → [4,4].
    assert merge_small([1, 3, 1, 2, 1], 2) == [4, 4]
    assert merge_small([3, 1, 3], 2) == [4, 3]  # equal neighbours: the left one
    assert merge_small([1, 1], 5) == [2]  # total below min_chunk: one chunk
    assert merge_small([2, 3], 1) == [2, 3]  # min_chunk 1 changes nothing
