"""Scripted behaviour policies and our offline datasets (card §10, ours).

Behaviour at noise level (σ, ε): a = clip(π(s) + σ·N(0, I)) with probability 1 − ε, else a uniform random action from
the seeded action space; clipped to the action box. ``controller=None`` is the uniform random policy.

Registered datasets (``OFFLINE_DATASETS``), built offline by :func:`build_offline_dataset` into
``$MINARI_DATASETS_PATH``; reference scores are stored in the Minari metadata: ref_min = mean return of the uniform
random policy, ref_max = mean return of the noiseless controller, each over 20 seeded episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from wfdiffuser.data.episodes import Episode
from wfdiffuser.data.minari_io import DatasetInfo, dataset_exists, dataset_root, load_episodes, write_dataset

__all__ = [
    "CONTROLLERS",
    "NoiseLevel",
    "OFFLINE_DATASETS",
    "OfflineSpec",
    "build_from_spec",
    "build_offline_dataset",
    "collect_episodes",
    "inverted_pendulum_pd",
    "load_or_build",
    "pendulum_spin",
    "pendulum_swing_up",
    "reference_scores",
]

Controller = Callable[[np.ndarray], np.ndarray]


def _pendulum_energy(cos_theta: float, thdot: float) -> float:
    """E = ½θ̇² + 15 cos θ (Pendulum-v1 per unit inertia; 15 = 3g/2l): 15 upright at rest, −15 hanging at rest."""
    return 0.5 * thdot**2 + 15.0 * cos_theta


def pendulum_swing_up(obs: np.ndarray) -> np.ndarray:
    """Pendulum-v1 swing-up (card §10). obs = (cos θ, sin θ, θ̇), θ = 0 upright, dynamics θ̈ = 15 sin θ + 3u.

    Near the top (cos θ > 0.9): PD u = −(12θ + 2.5θ̇). Else energy pumping u = 2·sign(θ̇)·sign(E* − E) with
    E = ½θ̇² + 15 cos θ, E* = 15 (the upright rest energy). Clipped to ±2. Returns shape (1,) float32.
    """
    c, s, thdot = float(obs[0]), float(obs[1]), float(obs[2])
    theta = np.arctan2(s, c)
    if c > 0.9:
        u = -(12.0 * theta + 2.5 * thdot)
    else:
        u = 2.0 * np.sign(thdot) * np.sign(15.0 - _pendulum_energy(c, thdot))
    return np.array([np.clip(u, -2.0, 2.0)], dtype=np.float32)


def pendulum_spin(obs: np.ndarray) -> np.ndarray:
    """Pendulum-v1 "spinner": the swing-up's energy pumping without the catch at the top, aiming at E = 20 > 15, so
    the pendulum keeps going over the top (ours: the poor behaviour of the multi-policy set; it visits the same
    states as the swing-up and differs where it matters, at the top). u = 2·s·sign(20 − E), s = sign(θ̇) (1 at θ̇ = 0).
    """
    c, thdot = float(obs[0]), float(obs[2])
    direction = np.sign(thdot) if thdot != 0.0 else 1.0
    return np.array([2.0 * direction * np.sign(20.0 - _pendulum_energy(c, thdot))], dtype=np.float32)


def inverted_pendulum_pd(obs: np.ndarray) -> np.ndarray:
    """InvertedPendulum-v5 PD (card §10): a = x + 20θ + 2ẋ + 2θ̇, obs = (x, θ, ẋ, θ̇); clipped to ±3.

    Signs checked by rollout: noiselessly it balances to the time limit (1000 steps uncapped).
    """
    x, theta, xdot, thdot = (float(v) for v in obs[:4])
    return np.array([np.clip(x + 20.0 * theta + 2.0 * xdot + 2.0 * thdot, -3.0, 3.0)], dtype=np.float32)


CONTROLLERS: dict[str, Controller] = {
    "pendulum_swing_up": pendulum_swing_up,
    "pendulum_spin": pendulum_spin,
    "inverted_pendulum_pd": inverted_pendulum_pd,
}


@dataclass(frozen=True)
class NoiseLevel:
    """Gaussian action noise σ (in action units) and ε, the per-step probability of a uniform random action;
    ``controller`` names another entry of ``CONTROLLERS`` for this level's episodes (None: the dataset's)."""

    sigma: float
    eps: float
    controller: str | None = None

    def __post_init__(self) -> None:
        if not self.sigma >= 0.0:
            raise ValueError(f"NoiseLevel.sigma must be >= 0, got {self.sigma}")
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"NoiseLevel.eps must be in [0, 1], got {self.eps}")


def _resolve(controller: Controller | str | None) -> Controller | None:
    if isinstance(controller, str):
        if controller == "random":
            return None
        if controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {controller!r}; choose one of {sorted(CONTROLLERS)} or 'random'")
        return CONTROLLERS[controller]
    return controller


def collect_episodes(
    env_id: str,
    controller: Controller | str | None,
    levels: list[NoiseLevel] | tuple[NoiseLevel, ...],
    episodes_per_level: int,
    seed: int,
    max_steps: int | None = None,
) -> list[Episode]:
    """Roll out ``episodes_per_level`` episodes per noise level, in order; deterministic for ``seed``.

    Episode k (counting over all levels) resets the env with seed ``seed + k``; the action space is seeded with
    ``seed`` and the Gaussian/ε draws come from ``numpy.random.default_rng(seed)``. ``max_steps`` caps episodes via
    ``gym.make(..., max_episode_steps=max_steps)`` (None: the env's registered limit).
    """
    import gymnasium as gym

    if episodes_per_level < 1:
        raise ValueError(f"episodes_per_level must be >= 1, got {episodes_per_level}")
    if not levels:
        raise ValueError("levels is empty; pass at least one NoiseLevel(sigma, eps)")
    default_policy = _resolve(controller)
    for level in levels:
        _resolve(level.controller)  # unknown names fail before any rollout
    kwargs = {} if max_steps is None else {"max_episode_steps": int(max_steps)}
    env = gym.make(env_id, **kwargs)
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        env.close()
        raise ValueError(f"{env_id} has a {type(space).__name__} action space; only Box is supported")
    space.seed(seed)
    rng = np.random.default_rng(seed)
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    episodes, k = [], 0
    try:
        for level in levels:
            policy = default_policy if level.controller is None else _resolve(level.controller)
            for _ in range(episodes_per_level):
                obs, _ = env.reset(seed=seed + k)
                observations, actions, rewards, terms, truncs = [obs], [], [], [], []
                done = False
                while not done:
                    if policy is None or rng.random() < level.eps:
                        a = space.sample().astype(np.float64)
                    else:
                        a = np.asarray(policy(obs), dtype=np.float64) + level.sigma * rng.standard_normal(space.shape)
                    a = np.clip(a, low, high).astype(space.dtype)
                    obs, r, term, trunc, _ = env.step(a)
                    observations.append(obs)
                    actions.append(a)
                    rewards.append(r)
                    terms.append(term)
                    truncs.append(trunc)
                    done = term or trunc
                episodes.append(Episode(np.stack(observations), np.stack(actions), np.asarray(rewards),
                                        np.asarray(terms), np.asarray(truncs), seed=seed + k))
                k += 1
    finally:
        env.close()
    return episodes


def reference_scores(env_id: str, controller: Controller | str, *, episodes: int = 20, seed: int = 10_000,
                     max_steps: int | None = None) -> tuple[float, float]:
    """(ref_min, ref_max) = mean returns of the uniform random policy and of the noiseless controller."""
    rand = collect_episodes(env_id, None, [NoiseLevel(0.0, 1.0)], episodes, seed, max_steps)
    expert = collect_episodes(env_id, controller, [NoiseLevel(0.0, 0.0)], episodes, seed, max_steps)
    return float(np.mean([e.ret for e in rand])), float(np.mean([e.ret for e in expert]))


@dataclass(frozen=True)
class OfflineSpec:
    """Recipe of one of our offline Minari datasets."""

    dataset_id: str
    env_id: str
    controller: str
    levels: tuple[NoiseLevel, ...]
    episodes_per_level: int
    max_steps: int | None
    seed: int = 0
    ref_episodes: int = 20
    ref_seed: int = 10_000
    description: str = ""

    @property
    def n_episodes(self) -> int:
        return len(self.levels) * self.episodes_per_level


OFFLINE_DATASETS: dict[str, OfflineSpec] = {
    spec.dataset_id: spec
    for spec in (
        # Card §10 mixture. Measured (seed 0, this code): 100 episodes, 20,000 transitions, return mean -723 (std 398),
        # min -1679, max -1.8; per eps level mean -1246 / -904 / -757 / -472 / -236; ref_min (random) -1118,
        # ref_max (noiseless) -122; build 1.2 s on a shared 2-core CPU.
        OfflineSpec(
            dataset_id="wfdiffuser/pendulum/mixed-v0",
            env_id="Pendulum-v1",
            controller="pendulum_swing_up",
            levels=tuple(NoiseLevel(1.0, eps) for eps in (1.0, 0.8, 0.6, 0.4, 0.2)),
            episodes_per_level=20,
            max_steps=200,
            description="Pendulum-v1, 200-step episodes; scripted swing-up (energy pumping + PD) with Gaussian "
                        "action noise sigma=1.0 and eps-random mixing, eps in {1.0, 0.8, 0.6, 0.4, 0.2}, 20 episodes "
                        "each (wfdiffuser, ours: card §10)",
        ),
        # Multi-policy mixture (ours): two behaviours that visit the same states and part at the top, where the
        # swing-up catches the pendulum and the spinner sends it over; the return label is what picks the catch. On
        # mixed-v0 (one controller, per-step noise) a low-temperature sampler denoises the noise back to the
        # controller, so conditioned and unconditioned planning barely differ (measured: -212 vs -276, 20 episodes).
        # Here the spinner is half the data, so the unconditioned planner mostly spins (DD: -708, WFDiffuser with
        # stft_xattn: -938) and the conditioned one catches (-174, -234; seed 0, 20 episodes each). With a quarter
        # spinner and a quarter noisy swing-up (sigma 1, eps 0.5) both planners caught about equally often (-304 vs
        # -321). Built (seed 0): 80 episodes, 16,000 transitions, return mean -907 (std 457); per level -1124 /
        # -1127 / -161 / -1216; ref_min (random) -1118, ref_max (noiseless swing-up) -122.
        OfflineSpec(
            dataset_id="wfdiffuser/pendulum/multi-v0",
            env_id="Pendulum-v1",
            controller="pendulum_swing_up",
            levels=(NoiseLevel(0.3, 0.0, "pendulum_spin"), NoiseLevel(0.3, 0.0, "pendulum_spin"),
                    NoiseLevel(0.3, 0.0), NoiseLevel(0.0, 1.0)),
            episodes_per_level=20,
            max_steps=200,
            description="Pendulum-v1, 200-step episodes; 40 episodes of a spinner (energy pumping to E = 20 without "
                        "the catch at the top, sigma 0.3), 20 of the scripted swing-up with sigma 0.3, 20 uniform "
                        "random (wfdiffuser, ours)",
        ),
        # InvertedPendulum-v5 capped at 200 steps; reward 1 per step alive, so return ~ episode length. Scan (seed 0,
        # 20 episodes per sigma, no eps): sigma 1.0 -> all 200 (cap), 1.25 -> mean 197, 1.5 -> mean 127 (25..200),
        # 1.75 -> mean 72 (5..200), 2.0 -> mean 40 (2..113), 2.5 -> 26, 3.0 -> 18 (2..44), 4.0 -> 7; uniform random
        # ~5; noiseless PD 1000 uncapped. Built set (seed 0): 100 episodes, 9,085 transitions, 71 terminated, return
        # mean 90 (std 79), min 2, max 200; per level 200 / 130 / 73 / 35 / 13; ref_min 5.7, ref_max 200; 0.9 s.
        OfflineSpec(
            dataset_id="wfdiffuser/inverted-pendulum/mixed-v0",
            env_id="InvertedPendulum-v5",
            controller="inverted_pendulum_pd",
            levels=tuple(NoiseLevel(sigma, 0.0) for sigma in (1.0, 1.5, 1.75, 2.0, 3.0)),
            episodes_per_level=20,
            max_steps=200,
            description="InvertedPendulum-v5 with episodes capped at 200 steps; PD a = x + 20θ + 2ẋ + 2θ̇ with "
                        "Gaussian action noise sigma in {1.0, 1.5, 1.75, 2.0, 3.0}, 20 episodes each "
                        "(wfdiffuser, ours)",
        ),
    )
}


def build_from_spec(spec: OfflineSpec, overwrite: bool = False) -> DatasetInfo:
    """Collect ``spec``'s episodes and reference scores and write them as a local Minari dataset."""
    episodes = collect_episodes(spec.env_id, spec.controller, spec.levels, spec.episodes_per_level, spec.seed,
                                spec.max_steps)
    ref_min, ref_max = reference_scores(spec.env_id, spec.controller, episodes=spec.ref_episodes, seed=spec.ref_seed,
                                        max_steps=spec.max_steps)
    env_kwargs = {} if spec.max_steps is None else {"max_episode_steps": spec.max_steps}
    return write_dataset(spec.dataset_id, episodes, spec.env_id, ref_min_score=ref_min, ref_max_score=ref_max,
                         algorithm_name=f"{spec.controller}+noise", description=spec.description,
                         env_kwargs=env_kwargs, overwrite=overwrite)


def build_offline_dataset(dataset_id: str, overwrite: bool = False) -> DatasetInfo:
    """Build one of ``OFFLINE_DATASETS`` into ``$MINARI_DATASETS_PATH`` (offline; no download)."""
    if dataset_id not in OFFLINE_DATASETS:
        raise ValueError(f"{dataset_id!r} is not one of our offline datasets {sorted(OFFLINE_DATASETS)}; official "
                         f"Minari sets are downloaded on a networked machine with `minari download {dataset_id}`")
    return build_from_spec(OFFLINE_DATASETS[dataset_id], overwrite=overwrite)


def load_or_build(dataset_id: str, build: bool = True) -> tuple[list[Episode], DatasetInfo]:
    """``load_episodes(dataset_id)``; if it is missing and one of ``OFFLINE_DATASETS`` (and ``build``), build it first
    (offline, seconds). Any other missing set raises ``DatasetNotFoundError`` (never downloads)."""
    if build and dataset_id in OFFLINE_DATASETS and not dataset_exists(dataset_id):
        with _build_lock(dataset_id):
            if not dataset_exists(dataset_id):  # another process may have built it while we waited
                print(f"building {dataset_id} offline (scripted controller with noise; no download)", flush=True)
                build_offline_dataset(dataset_id)
    return load_episodes(dataset_id)


@contextmanager
def _build_lock(dataset_id: str) -> Iterator[None]:
    """An exclusive file lock per dataset id in the datasets folder, so that runs started together (seeds in
    parallel, ``accelerate launch`` ranks) build a missing set once instead of writing the same folder at once."""
    root = dataset_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{dataset_id.replace('/', '__')}.lock", "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
