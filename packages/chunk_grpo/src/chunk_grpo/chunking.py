"""Chunk sizes for the T trained transitions: fixed, uniform and our adaptive rule (chunk_grpo.md §5).

Every function returns chunk sizes ``[cs_1, …, cs_K]``, **high noise first** (chunk 1 starts at step 0, σ ≈ 1),
with Σ cs_j = T, like GCPO's ``--new_chunk_list``; :func:`to_steps` turns them into lists of step indices. Step k
goes σ_k → σ_{k+1} (σ: 1 → 0). Pure functions on lists / 1-D tensors, no I/O.

* :func:`fixed`    the given list, checked to sum to T (GCPO's released setting: [2, 3, 4, 7] for T = 16).
* :func:`uniform`  ⌊T/s⌋ chunks of size s, then **one shorter last chunk of the remainder** T mod s when it is not 0
  (T = 10, s = 4 → [4, 4, 2]); the authors' `set_chunk` does the same. [authors' code: `fastvideo/utils/chunk.py`]
* :func:`adaptive` our reconstruction of the unreleased "temporal" chunking; the rule is stated in full on the
  function. [our reading: the paper gives the idea, not the rule or its threshold]
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from shared.selection import chunks as _chunks

__all__ = ["adaptive", "fixed", "merge_small", "to_steps", "uniform"]


def _check_positive_int(name: str, value: object, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def fixed(sizes: Sequence[int], num_steps: int) -> list[int]:
    """The listed sizes (high noise first), which must be positive ints summing to ``num_steps``."""
    _check_positive_int("num_steps", num_steps)
    sizes = list(sizes)
    if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of positive ints, got {sizes!r}")
    if sum(sizes) != num_steps:
        raise ValueError(f"sizes {sizes} sum to {sum(sizes)}, not num_steps={num_steps}")
    return sizes


def uniform(size: int, num_steps: int) -> list[int]:
    """⌊T/size⌋ chunks of ``size``, plus one last chunk of the remainder T mod size if nonzero (never larger than
    ``size``): T = 16, size 4 → [4, 4, 4, 4]; T = 10, size 4 → [4, 4, 2]; size ≥ T → [T]."""
    _check_positive_int("size", size)
    _check_positive_int("num_steps", num_steps)
    full, rest = divmod(num_steps, size)
    return [size] * full + ([rest] if rest else [])


def to_steps(sizes: Sequence[int], offset: int = 0) -> list[list[int]]:
    """Sizes → step indices, e.g. [2, 3] → [[0, 1], [2, 3, 4]] (``offset`` shifts every index)."""
    return [[offset + s for s in chunk] for chunk in _chunks(list(sizes))]


# ------------------------------------------------------------------------------------------------------ adaptive


def _differences(values: list[float], order: int) -> list[float]:
    """k-th forward differences d^k_t = d^{k−1}_{t+1} − d^{k−1}_t (d^0 = values); len(values) − k entries."""
    d = list(values)
    for _ in range(order):
        d = [b - a for a, b in zip(d, d[1:], strict=False)]
    return d


def _signs(d: list[float]) -> list[int]:
    """Signs in {−1, 0, +1} where a zero takes the (resolved) sign of its left neighbour. Leading zeros, which have
    none, take the sign of the first nonzero difference to their right, so they never make a sign change; all zeros
    stay 0 (no sign change)."""
    raw = [(x > 0) - (x < 0) for x in d]
    first = next((s for s in raw if s != 0), 0)
    out, last = [], first
    for s in raw:
        last = s if s != 0 else last
        out.append(last)
    return out


def _sign_change_cuts(values: list[float], order: int) -> list[int]:
    """Boundaries (relative to the segment) where the order-k differences change sign.

    With d = d^k of the segment: for every t ≥ 1 with sign(d_{t−1}) ≠ sign(d_t), cut **after transition
    t + ⌊(k−1)/2⌋**, i.e. the left piece ends with that transition; the boundary returned is t + ⌊(k−1)/2⌋ + 1.
    k = 1: ℓ_t is a local extremum and closes the left chunk. k = 2: the inflection lies between t and t+1.
    Empty when fewer than 2 differences exist (the segment is too short for order k) or no sign changes.
    """
    d = _differences(values, order)
    if len(d) < 2:
        return []
    s = _signs(d)
    shift = (order - 1) // 2
    return [t + shift + 1 for t in range(1, len(d)) if s[t - 1] != s[t]]


def _split(values: list[float], start: int, stop: int, order: int, max_chunk: int, max_order: int) -> list[int]:
    """Sizes of the chunks of segment [start, stop) under the adaptive rule at difference order ``order``."""
    n = stop - start
    if n <= max_chunk:
        return [n]
    cuts = _sign_change_cuts(values[start:stop], order) if order <= max_order else []
    if not cuts:
        cuts = [(n + 1) // 2]  # midpoint; the left half gets the extra step
    bounds = [0, *cuts, n]
    out: list[int] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out.extend(_split(values, start + lo, start + hi, order + 1, max_chunk, max_order))
    return out


def merge_small(sizes: Sequence[int], min_chunk: int) -> list[int]:
    """Enforce ``min_chunk`` by merging: while a chunk is smaller than ``min_chunk`` (and more than one chunk is
    left), take the smallest such chunk (the leftmost on ties) and merge it into its smaller neighbour (the left one
    on ties; the only one at either end). The sum is unchanged; a merged chunk may exceed ``max_chunk``. If the
    total is below ``min_chunk`` the result is the single chunk [T]."""
    _check_positive_int("min_chunk", min_chunk)
    out = list(sizes)
    while len(out) > 1:
        small = [j for j, s in enumerate(out) if s < min_chunk]
        if not small:
            break
        j = min(small, key=lambda i: (out[i], i))
        if j == 0:
            left = 0
        elif j == len(out) - 1:
            left = j - 1
        else:
            left = j - 1 if out[j - 1] <= out[j + 1] else j
        out[left:left + 2] = [out[left] + out[left + 1]]
    return out


def adaptive(l1rel_curve: Sequence[float] | Tensor, max_chunk: int = 4, min_chunk: int = 1,
             max_order: int = 3) -> list[int]:
    """Chunk sizes from an L1rel curve ℓ_0..ℓ_{T−1} (one value per trained transition, high noise first).

    Our rule (documented as ours; the paper's "temporal" chunking is unreleased) [our reading, chunk_grpo.md §5]:

    1. ``split(segment, k)``, starting with the whole curve and k = 1: a segment of ≤ ``max_chunk`` transitions is
       kept as one chunk.
    2. Otherwise take the k-th forward differences d^k_t of ℓ inside the segment (d^1_t = ℓ_{t+1} − ℓ_t, t counted
       from the segment start). Zero differences take the sign of their left neighbour (leading zeros: of the first
       nonzero one; all zero: no sign change). Wherever sign(d^k_{t−1}) ≠ sign(d^k_t), cut **after transition
       t + ⌊(k−1)/2⌋** (all such cuts at once). If there is no sign change, or the segment is too short for order k
       (fewer than 2 differences), cut at the midpoint: the left half gets ⌈n/2⌉ transitions.
    3. Recurse ``split(piece, k+1)`` on every piece; beyond ``max_order`` only midpoint cuts are made
       (``max_order = 0``: midpoint bisection only).
    4. :func:`merge_small` then enforces ``min_chunk`` (default 1: nothing to merge).

    Returns sizes high noise first, summing to T. Every chunk has ≤ ``max_chunk`` transitions unless a
    ``min_chunk`` merge made it larger. Differences are taken in float64 on the values given (no smoothing), so a
    noisy curve gives many cuts at k = 1.
    """
    values = [float(v) for v in (l1rel_curve.detach().cpu().reshape(-1).tolist() if isinstance(l1rel_curve, Tensor)
                                 else l1rel_curve)]
    if not values:
        raise ValueError("l1rel_curve is empty; need one value per trained transition")
    if any(v != v for v in values):
        raise ValueError(f"l1rel_curve has NaN values: {values}")
    _check_positive_int("max_chunk", max_chunk)
    _check_positive_int("min_chunk", min_chunk)
    _check_positive_int("max_order", max_order, low=0)
    if min_chunk > max_chunk:
        raise ValueError(f"min_chunk={min_chunk} must not exceed max_chunk={max_chunk}")
    sizes = _split(values, 0, len(values), 1, max_chunk, max_order)
    return merge_small(sizes, min_chunk)
