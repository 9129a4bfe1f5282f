"""The vanishing-sample filter (mask_grpo.md §6, Table 3: 0.73 with it vs 0.60 without).

Low-std groups give weak, noisy advantages. Keep a history of per-group reward std; when a new group's std is
below the `percentile`-th percentile of that history, resample the group [paper §3.3]. The released training
script lacks it (card §8); the rules below the paper's sentence are ours:

- the filter acts once `min_history` groups have been seen; the history keeps the most recent `history` stds;
- "below" is `std < q`, plus `std == 0` when q is 0 (with a discrete reward such as the shapes verifier many groups
  tie exactly and the 10th percentile is often 0; "< 0" would never fire);
- a group is redrawn at most `max_tries` times and the last draw is kept;
- the history receives the std of every group's first draw, after the iteration's decisions, so that all groups
  of one iteration are judged against the same history (and all processes hold the same one: the trainer gathers
  the stds first).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np


class VanishingSampleFilter:
    """Per-group reward-std history and the resample decision (module doc)."""

    def __init__(self, percentile: float = 10.0, *, min_history: int = 16, history: int = 2000, max_tries: int = 2):
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
        self.percentile, self.min_history, self.max_tries = float(percentile), int(min_history), int(max_tries)
        self.stds: deque[float] = deque(maxlen=int(history))

    def threshold(self) -> float | None:
        """The current percentile of the history, or None while fewer than `min_history` groups were seen."""
        if len(self.stds) < self.min_history:
            return None
        return float(np.percentile(np.asarray(self.stds, dtype=np.float64), self.percentile))

    def should_resample(self, std: float, tries: int = 0) -> bool:
        """Resample a group with reward std `std` that was already redrawn `tries` times?"""
        q = self.threshold()
        if q is None or tries >= self.max_tries:
            return False
        return std < q or (q == 0.0 and std == 0.0)

    def observe(self, stds: Iterable[float]) -> None:
        self.stds.extend(float(s) for s in stds)

    def state_dict(self) -> dict:
        return {"stds": list(self.stds)}

    def load_state_dict(self, state: dict) -> None:
        self.stds.clear()
        self.stds.extend(state["stds"])
