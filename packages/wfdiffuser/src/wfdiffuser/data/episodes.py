"""One episode of offline data with explicit boundaries (card §9).

Layout as Minari's ``EpisodeData``: T steps give T + 1 observations (s_0 … s_T, s_T the observation after the last
action) and T actions, rewards, terminations and truncations. ``terminations[-1]`` marks an episode that ended in a
terminal state (the termination penalty applies); ``truncations[-1]`` one cut by a time limit (no penalty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Episode"]


def _array(name: str, value, dtype, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim:
        shape = "(T+1, obs_dim)" if name == "observations" else "(T, act_dim)" if name == "actions" else "(T,)"
        raise ValueError(f"Episode.{name} must have {ndim} dimensions {shape}, got shape {arr.shape}; "
                         f"reshape it (e.g. a scalar action per step as (T, 1))")
    return arr


@dataclass
class Episode:
    """observations (T+1, ds) float32, actions (T, da) float32, rewards (T,) float32, terminations and
    truncations (T,) bool.

    ``seed`` is the env reset seed when known (stored in and read back from Minari's episode metadata).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None

    def __post_init__(self) -> None:
        self.observations = _array("observations", self.observations, np.float32, 2)
        self.actions = _array("actions", self.actions, np.float32, 2)
        self.rewards = _array("rewards", self.rewards, np.float32, 1)
        self.terminations = _array("terminations", self.terminations, bool, 1)
        self.truncations = _array("truncations", self.truncations, bool, 1)
        t = len(self.actions)
        if t < 1:
            raise ValueError("Episode.actions is empty; an episode needs at least one step")
        if len(self.observations) != t + 1:
            raise ValueError(f"Episode.observations must have T+1 = {t + 1} rows for T = {t} actions, got "
                             f"{len(self.observations)}; include the observation after the last action")
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != t:
                raise ValueError(f"Episode.{name} must have T = {t} entries (one per action), got "
                                 f"{len(getattr(self, name))}")
        if self.seed is not None:
            self.seed = int(self.seed)

    @property
    def length(self) -> int:
        """T, the number of steps (actions)."""
        return len(self.actions)

    @property
    def ret(self) -> float:
        """Undiscounted return Σ_t r_t (float64 sum)."""
        return float(np.sum(self.rewards, dtype=np.float64))

    @property
    def terminated(self) -> bool:
        """True when the episode ended in a terminal state (terminations[-1])."""
        return bool(self.terminations[-1])

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    def equals(self, other: Episode, *, atol: float = 0.0) -> bool:
        """Field-wise equality (arrays within ``atol``; seeds compared when both are known)."""
        if self.seed is not None and other.seed is not None and self.seed != other.seed:
            return False
        return all(
            a.shape == b.shape and np.allclose(a, b, rtol=0.0, atol=atol)
            for a, b in ((self.observations, other.observations), (self.actions, other.actions),
                         (self.rewards, other.rewards))
        ) and np.array_equal(self.terminations, other.terminations) and np.array_equal(self.truncations,
                                                                                      other.truncations)
