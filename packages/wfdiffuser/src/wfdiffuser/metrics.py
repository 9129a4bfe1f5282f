"""Scores and the paper's trajectory metrics (card §8, §11).

* Normalised score = 100·(R − R_random)/(R_expert − R_random) with D4RL's constants for the locomotion tasks
  (``d4rl/gym_mujoco/__init__.py``; only approximately valid on the v5 envs Minari regenerated its sets on) or a
  dataset's own ``ref_min_score``/``ref_max_score`` (our offline sets: random policy / noiseless controller).
* Frequency shift (ours, card §11): relative error of the low-frequency energy of generated trajectories against dataset
  windows of the same length, |E_gen − E_data|/E_data with E = mean over windows and state dimensions of
  Σ_{k<K} |rFFT(x − mean_t x)_k|², the lowest K bins excluding DC.
* Smoothness (ours): mean squared second difference along time, mean_{b,t,d} (x_{t+1} − 2x_t + x_{t−1})².
"""

from __future__ import annotations

import numpy as np

__all__ = ["D4RL_REF_SCORES", "low_frequency_energy", "frequency_shift", "normalized_score", "ref_scores_for",
           "smoothness", "mean_and_stderr"]

#: (R_random, R_expert) of D4RL's gym-MuJoCo tasks, shared by medium / medium-replay / medium-expert / expert.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def normalized_score(returns: np.ndarray | float, ref_min: float, ref_max: float) -> np.ndarray:
    """100·(R − R_min)/(R_max − R_min) (D4RL's ``get_normalized_score`` × 100)."""
    if not ref_max > ref_min:
        raise ValueError(f"reference scores need ref_max > ref_min, got ({ref_min}, {ref_max})")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def ref_scores_for(env_id: str, ref_min: float | None = None, ref_max: float | None = None) -> tuple[float, float] | None:
    """The dataset's own reference scores when it has them, else D4RL's for Hopper/HalfCheetah/Walker2d, else None."""
    if ref_min is not None and ref_max is not None:
        return float(ref_min), float(ref_max)
    key = env_id.split("-")[0].lower()
    return D4RL_REF_SCORES.get(key)


def low_frequency_energy(x: np.ndarray, bins: int = 3) -> float:
    """Mean over windows and dimensions of the energy in rFFT bins 1..``bins`` along time of x (N, L, d)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 2 * bins + 1:
        raise ValueError(f"x must be (N, L, d) with L >= {2 * bins + 1} for {bins} bins, got {x.shape}")
    spec = np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)
    return float((np.abs(spec[:, 1: bins + 1]) ** 2).sum(axis=1).mean())


def frequency_shift(generated: np.ndarray, data: np.ndarray, bins: int = 3) -> float:
    """|E_low(generated) − E_low(data)| / E_low(data) on trajectories (N, L, d) in the same units."""
    ref = low_frequency_energy(data, bins)
    return abs(low_frequency_energy(generated, bins) - ref) / max(ref, 1e-12)


def smoothness(x: np.ndarray) -> float:
    """Mean squared second difference along axis 1 of x (N, L, d) (lower is smoother)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 3:
        raise ValueError(f"x must be (N, L, d) with L >= 3, got {x.shape}")
    return float(((x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]) ** 2).mean())


def mean_and_stderr(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / √n; 0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
