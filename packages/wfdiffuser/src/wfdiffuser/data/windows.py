"""Training windows with a return label (card §3 "Data (as DD)", card §10).

For an episode with T steps (observations s_0 … s_T, actions a_0 … a_{T−1}) and a window start t:

* states  (H, ds) = normalised s_t … s_{t+H−1}; actions (H, da) = normalised a_t … a_{t+H−1};
* return label from G_t = Σ_{k=t}^{T−1} γ^{k−t} r_k (discounted return-to-go over the rest of the episode), with
  ``termination_penalty`` added to r_{T−1} when the episode terminated (not when it was truncated), as DD;
  label = (G_t − G_min)/(G_max − G_min) over all window starts (``"minmax"``, ours, card §10) or G_t/returns_scale
  (``"scale"``, DD's, 400 for Hopper). :class:`ReturnLabel` maps a raw return target to a label and back.

``pad="edge"`` (default): starts t = 0 … T−1; past the end, states repeat the last observation s_T and actions are 0 in
the *normalised* space (the middle of the action range for ``limits``); ``mask[j]`` is True iff t + j < T, i.e. s_j,
a_j and s_{j+1} are all real (s_T itself sits at the first False position). ``pad="none"``: only windows that fit
(t ≤ T − H, all of ``mask`` True), as Diffuser without padding; episodes shorter than H give none.
Normalisers (one for states, one for actions) are fitted on all real observations (T + 1 per episode) and actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wfdiffuser.data.episodes import Episode
from wfdiffuser.data.normalizers import NORMALIZERS, Normalizer, build_normalizer

__all__ = ["PADS", "RETURN_LABELS", "ReturnLabel", "SequenceDataset", "discounted_rtg"]

RETURN_LABELS = ("minmax", "scale")
PADS = ("edge", "none")


def discounted_rtg(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = r_t + γ G_{t+1}, G_T = 0, for t = 0 … T−1 (float64)."""
    out = np.empty(len(rewards), dtype=np.float64)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[k]) + discount * acc
        out[k] = acc
    return out


@dataclass(frozen=True)
class ReturnLabel:
    """Raw discounted return-to-go ↔ conditioning label.

    ``minmax``: label = (G − low)/(high − low) (= G − low when high == low); ``scale``: label = G/scale.
    """

    kind: str
    low: float = 0.0
    high: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in RETURN_LABELS:
            raise ValueError(f"return_label must be one of {RETURN_LABELS}, got {self.kind!r}")
        if self.kind == "scale" and not self.scale > 0:
            raise ValueError(f"returns_scale must be > 0, got {self.scale}")

    @property
    def _den(self) -> float:
        return self.scale if self.kind == "scale" else (self.high - self.low if self.high > self.low else 1.0)

    @property
    def _off(self) -> float:
        return 0.0 if self.kind == "scale" else self.low

    def __call__(self, raw):
        """Label of a raw return-to-go (float, numpy or torch)."""
        return (raw - self._off) / self._den

    def inverse(self, label):
        """Raw return-to-go of a label."""
        return label * self._den + self._off

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high, "scale": self.scale}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReturnLabel:
        return cls(kind=state["kind"], low=float(state["low"]), high=float(state["high"]),
                   scale=float(state["scale"]))


class SequenceDataset(torch.utils.data.Dataset):
    """Windows of length ``horizon`` over ``episodes``; item = dict(states (H, ds), actions (H, da), returns (1,),
    mask (H,) bool), all float32 except mask. See the module docstring for the formulas and the padding rule."""

    def __init__(
        self,
        episodes: list[Episode],
        horizon: int,
        normalizer: str = "limits",
        discount: float = 0.99,
        termination_penalty: float = -100.0,
        return_label: str = "minmax",
        returns_scale: float = 400.0,
        pad: str = "edge",
    ) -> None:
        if not episodes:
            raise ValueError("episodes is empty; load or collect at least one Episode")
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        if return_label not in RETURN_LABELS:
            raise ValueError(f"return_label must be one of {RETURN_LABELS}, got {return_label!r}")
        if pad not in PADS:
            raise ValueError(f"pad must be one of {PADS}, got {pad!r}")
        ds, da = episodes[0].obs_dim, episodes[0].act_dim
        if any(ep.obs_dim != ds or ep.act_dim != da for ep in episodes):
            raise ValueError("episodes have different observation/action dims; use episodes of one env")
        self.episodes = episodes
        self.horizon = h = int(horizon)
        self.discount = float(discount)
        self.termination_penalty = float(termination_penalty)
        self.pad = pad

        self.state_normalizer: Normalizer = build_normalizer(
            normalizer, np.concatenate([ep.observations for ep in episodes]))
        self.action_normalizer: Normalizer = build_normalizer(
            normalizer, np.concatenate([ep.actions for ep in episodes]))

        states, actions, s_start, a_start, remaining, rtg = [], [], [], [], [], []
        s_off = a_off = 0
        for ep in episodes:
            t_len = ep.length
            rewards = ep.rewards.astype(np.float64)
            if ep.terminated and self.termination_penalty != 0.0:
                rewards[-1] += self.termination_penalty
            g = discounted_rtg(rewards, self.discount)
            s_norm = self.state_normalizer.normalize(ep.observations.astype(np.float32))
            a_norm = self.action_normalizer.normalize(ep.actions.astype(np.float32))
            if pad == "edge":
                starts = np.arange(t_len)
                n_s = max(t_len + 1, t_len + h - 1)
                s_pad = np.concatenate([s_norm, np.repeat(s_norm[-1:], n_s - (t_len + 1), axis=0)])
                a_pad = np.concatenate([a_norm, np.zeros((t_len + h - 1 - t_len, da), np.float32)])
            else:
                starts = np.arange(max(t_len - h + 1, 0))
                s_pad, a_pad = s_norm, a_norm
            states.append(s_pad)
            actions.append(a_pad)
            s_start.append(s_off + starts)
            a_start.append(a_off + starts)
            remaining.append(t_len - starts)
            rtg.append(g[starts])
            s_off += len(s_pad)
            a_off += len(a_pad)
        self.returns_raw = np.concatenate(rtg)
        if len(self.returns_raw) == 0:
            longest = max(ep.length for ep in episodes)
            raise ValueError(f"no window of horizon {h} fits with pad='none' (longest episode has {longest} steps); "
                             "lower the horizon or use pad='edge'")
        self._states = torch.from_numpy(np.concatenate(states).astype(np.float32))
        self._actions = torch.from_numpy(np.concatenate(actions).astype(np.float32))
        self._s_start = torch.from_numpy(np.concatenate(s_start))
        self._a_start = torch.from_numpy(np.concatenate(a_start))
        self._remaining = torch.from_numpy(np.concatenate(remaining))
        self.return_fn = ReturnLabel(return_label, low=float(self.returns_raw.min()),
                                     high=float(self.returns_raw.max()), scale=float(returns_scale))
        self._labels = torch.from_numpy(np.asarray(self.return_fn(self.returns_raw), dtype=np.float32))
        self._steps = torch.arange(h)

    @property
    def obs_dim(self) -> int:
        return self.state_normalizer.dim

    @property
    def act_dim(self) -> int:
        return self.action_normalizer.dim

    def __len__(self) -> int:
        return len(self._labels)

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """Vectorised ``__getitem__`` for a 1-D index array: (B, H, ds), (B, H, da), (B, 1), (B, H)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        idx = idx % len(self)
        steps = self._steps[None]
        return {
            "states": self._states[self._s_start[idx, None] + steps],
            "actions": self._actions[self._a_start[idx, None] + steps],
            "returns": self._labels[idx, None],
            "mask": steps < self._remaining[idx, None],
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch([int(index)]).items()}

    def dataset_stats(self) -> dict[str, float]:
        """Per-episode undiscounted return (without the termination penalty) and sizes."""
        rets = np.array([ep.ret for ep in self.episodes], dtype=np.float64)
        return {
            "n_episodes": len(self.episodes),
            "n_transitions": int(sum(ep.length for ep in self.episodes)),
            "n_windows": len(self),
            "return_mean": float(rets.mean()),
            "return_std": float(rets.std()),
            "return_min": float(rets.min()),
            "return_max": float(rets.max()),
            "rtg_min": float(self.returns_raw.min()),
            "rtg_max": float(self.returns_raw.max()),
        }
