"""Read and write Minari datasets offline (card §9).

Storage: ``$MINARI_DATASETS_PATH/<namespace>/<env>/<name>-vN/data/`` (default ``~/.minari/datasets``; the variable is
read at call time). Loading never downloads (``minari.load_dataset(id, download=False)``); a missing set raises
:class:`DatasetNotFoundError` before Minari is imported. Writing uses ``minari.create_dataset_from_buffers`` with whole
episode arrays in ``EpisodeBuffer``s (no ``DataCollector``, so no jax).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wfdiffuser.data.episodes import Episode

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_exists",
    "dataset_path",
    "dataset_root",
    "load_episodes",
    "parse_dataset_id",
    "write_dataset",
]

ENV_VAR = "MINARI_DATASETS_PATH"
# Minari's grammar (minari/dataset/minari_dataset.py) with the version required: (namespace/)(env/)name-vN.
_ID_RE = re.compile(r"^(?:(?P<namespace>[-_\w][-_\w/]*[-_\w]+)/)?(?P<name>[-_\w]+?)-v(?P<version>\d+)$")


class DatasetNotFoundError(FileNotFoundError):
    """A Minari dataset is not in the local folder; the message says where we looked and how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What planning/evaluation needs from a dataset's metadata.

    ``env_kwargs`` are the keyword arguments of ``gym.make(env_id, **env_kwargs)`` that recreate the evaluation env,
    including ``max_episode_steps`` when the stored spec has one (our InvertedPendulum set caps episodes at 200).
    ``ref_min_score``/``ref_max_score`` are the normalisation anchors (Minari: random and expert mean returns).
    """

    dataset_id: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    total_steps: int = 0
    n_episodes: int = 0

    @property
    def max_episode_steps(self) -> int | None:
        return self.env_kwargs.get("max_episode_steps")

    def normalized_score(self, returns):
        """(R − ref_min)/(ref_max − ref_min), a fraction as Minari's ``get_normalized_score`` (card §8, §9)."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(f"dataset {self.dataset_id!r} has no ref_min_score/ref_max_score in its metadata; "
                             "report raw returns or rebuild it with reference scores")
        return (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def make_env(self, **overrides):
        """``gym.make(env_id, **env_kwargs, **overrides)``."""
        import gymnasium as gym

        return gym.make(self.env_id, **{**self.env_kwargs, **overrides})


def dataset_root() -> Path:
    """``$MINARI_DATASETS_PATH`` read now, else ``~/.minari/datasets`` (Minari's rule; nothing is created)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def parse_dataset_id(dataset_id: str) -> tuple[str | None, str, int]:
    """Split ``(namespace/)(env/)name-vN`` into (namespace or None, name, N); ValueError naming the fix otherwise."""
    if not isinstance(dataset_id, str) or not dataset_id:
        raise ValueError(f"dataset_id must be a non-empty string like 'mujoco/hopper/medium-v0', got {dataset_id!r}")
    m = _ID_RE.fullmatch(dataset_id)
    if m is None or "//" in dataset_id:
        raise ValueError(f"dataset_id {dataset_id!r} is malformed: use (namespace/)(env/)name-vN with letters, digits, "
                         "'-' and '_', e.g. 'mujoco/hopper/medium-v0' or 'wfdiffuser/pendulum/mixed-v0'")
    return m.group("namespace"), m.group("name"), int(m.group("version"))


def dataset_path(dataset_id: str) -> Path:
    """Folder of a dataset: ``dataset_root() / dataset_id`` (its arrays live in ``data/``)."""
    parse_dataset_id(dataset_id)
    return dataset_root() / dataset_id


def dataset_exists(dataset_id: str) -> bool:
    return (dataset_path(dataset_id) / "data").is_dir()


def _not_found(dataset_id: str) -> DatasetNotFoundError:
    path = dataset_path(dataset_id)
    return DatasetNotFoundError(
        f"Minari dataset {dataset_id!r} not found: no folder {path / 'data'} (root {dataset_root()}, set by "
        f"${ENV_VAR}, default ~/.minari/datasets). Our offline sets (wfdiffuser/...) are built locally with "
        f"`wfdiffuser data --dataset {dataset_id}`; official Minari sets must be downloaded on a networked machine "
        f"with `minari download {dataset_id}` and copied under ${ENV_VAR}. Nothing is downloaded here.")


def _info_from_dataset(ds) -> DatasetInfo:
    meta = ds.storage.metadata
    spec = getattr(ds, "_eval_env_spec", None) or ds.env_spec
    if spec is None:
        raise ValueError(f"dataset {ds.id!r} stores no env spec; it cannot be evaluated in an environment")
    kwargs = dict(spec.kwargs or {})
    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(spec.max_episode_steps)
    ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    return DatasetInfo(dataset_id=ds.id, env_id=spec.id, env_kwargs=kwargs,
                       ref_min_score=None if ref_min is None else float(ref_min),
                       ref_max_score=None if ref_max is None else float(ref_max),
                       total_steps=int(ds.total_steps), n_episodes=int(ds.total_episodes))


def _episode_from(data, seed) -> Episode:
    for name in ("observations", "actions"):
        if not isinstance(getattr(data, name), np.ndarray):
            raise ValueError(f"episode {data.id}: {name} are {type(getattr(data, name)).__name__}, not a Box array; "
                             "only flat Box observation and action spaces are supported")
    obs, act = data.observations, data.actions
    return Episode(observations=obs.reshape(len(obs), -1), actions=act.reshape(len(act), -1),
                   rewards=data.rewards, terminations=data.terminations, truncations=data.truncations, seed=seed)


def load_episodes(dataset_id: str) -> tuple[list[Episode], DatasetInfo]:
    """All episodes of a local Minari dataset and its :class:`DatasetInfo`; never downloads."""
    if not dataset_exists(dataset_id):
        raise _not_found(dataset_id)
    import minari

    try:
        ds = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as exc:  # raced with a deletion or the root changed
        raise _not_found(dataset_id) from exc
    seeds = [m.get("seed") for m in ds.storage.get_episode_metadata(ds.episode_indices)]
    episodes = [_episode_from(ep, seed) for ep, seed in zip(ds.iterate_episodes(), seeds)]
    return episodes, _info_from_dataset(ds)


_QUIET = r"`(code_permalink|author|author_email|algorithm_name|description|eval_env)` is set to None"


def write_dataset(
    dataset_id: str,
    episodes: list[Episode],
    env_id: str,
    *,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str = "scripted",
    description: str | None = None,
    author: str = "wfdiffuser",
    code_permalink: str | None = "packages/wfdiffuser/src/wfdiffuser/data/behaviour.py",
    env_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> DatasetInfo:
    """Write ``episodes`` as Minari dataset ``dataset_id`` (HDF5) for env ``gym.make(env_id, **env_kwargs)``.

    Both reference scores or neither (with only ``ref_max_score`` Minari would roll out 100 random episodes; with
    only ``ref_min_score`` it drops it). ``overwrite=True`` deletes an existing local copy first
    (``minari.delete_dataset``); otherwise an existing dataset is a FileExistsError.
    """
    parse_dataset_id(dataset_id)
    if not episodes:
        raise ValueError("episodes is empty; write at least one Episode")
    if (ref_min_score is None) != (ref_max_score is None):
        raise ValueError("pass both ref_min_score and ref_max_score, or neither")
    obs_dim, act_dim = episodes[0].obs_dim, episodes[0].act_dim
    for i, ep in enumerate(episodes):
        if ep.obs_dim != obs_dim or ep.act_dim != act_dim:
            raise ValueError(f"episode {i} has obs/act dims ({ep.obs_dim}, {ep.act_dim}), episode 0 has "
                             f"({obs_dim}, {act_dim}); all episodes must come from one env")
    path = dataset_path(dataset_id)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {path}; pass overwrite=True "
                                  "(`--overwrite`) to replace it or choose another version -vN")
        import minari

        with contextlib.redirect_stdout(io.StringIO()):  # delete_dataset prints
            minari.delete_dataset(dataset_id)

    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gym.make(env_id, **(env_kwargs or {}))
    if env.observation_space.shape != (obs_dim,) or env.action_space.shape != (act_dim,):
        env.close()
        raise ValueError(f"episodes have obs/act dims ({obs_dim}, {act_dim}) but {env_id} has spaces "
                         f"{env.observation_space.shape}/{env.action_space.shape}")
    obs_dtype, act_dtype = env.observation_space.dtype, env.action_space.dtype
    buffers = [
        EpisodeBuffer(id=i, seed=ep.seed, observations=ep.observations.astype(obs_dtype),
                      actions=ep.actions.astype(act_dtype), rewards=ep.rewards.astype(np.float64),
                      terminations=ep.terminations, truncations=ep.truncations, infos={})
        for i, ep in enumerate(episodes)
    ]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_QUIET)
            ds = minari.create_dataset_from_buffers(
                dataset_id, buffer=buffers, env=env, eval_env=env, algorithm_name=algorithm_name, author=author,
                code_permalink=code_permalink, ref_min_score=ref_min_score, ref_max_score=ref_max_score,
                description=description, data_format="hdf5")
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # never leave a half-written dataset behind
        raise
    finally:
        env.close()
    return _info_from_dataset(ds)
