"""Minari I/O offline: write → load equality in tmp_path, missing-dataset message, overwrite, id grammar."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wfdiffuser.data import (
    OFFLINE_DATASETS,
    DatasetNotFoundError,
    Episode,
    build_from_spec,
    collect_episodes,
    dataset_root,
    load_episodes,
    load_or_build,
    parse_dataset_id,
    write_dataset,
)


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


def _episodes():
    rng = np.random.default_rng(0)
    out = []
    for t, term in ((4, True), (6, False)):
        out.append(Episode(observations=rng.normal(size=(t + 1, 3)).astype(np.float32),
                           actions=rng.uniform(-2, 2, (t, 1)).astype(np.float32),
                           rewards=rng.normal(size=t).astype(np.float32),
                           terminations=np.eye(t, dtype=bool)[-1] if term else np.zeros(t, bool),
                           truncations=np.zeros(t, bool) if term else np.eye(t, dtype=bool)[-1], seed=7 + t))
    return out


def test_dataset_root_reads_env_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "a"))
    assert dataset_root() == tmp_path / "a"
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    assert dataset_root().parts[-2:] == (".minari", "datasets")


def test_write_load_round_trip(minari_root):
    eps = _episodes()
    info = write_dataset("test/pendulum/tiny-v0", eps, "Pendulum-v1", ref_min_score=-1000.0, ref_max_score=-100.0,
                         env_kwargs={"max_episode_steps": 50}, description="test")
    assert (minari_root / "test/pendulum/tiny-v0/data").is_dir()
    loaded, info2 = load_episodes("test/pendulum/tiny-v0")
    assert info == info2
    assert info.env_id == "Pendulum-v1" and info.env_kwargs == {"max_episode_steps": 50}
    assert (info.n_episodes, info.total_steps) == (2, 10)
    assert (info.ref_min_score, info.ref_max_score) == (-1000.0, -100.0)
    assert info.normalized_score(-550.0) == pytest.approx(0.5)
    assert len(loaded) == 2
    for a, b in zip(eps, loaded):
        assert a.equals(b) and b.seed == a.seed
        assert b.observations.dtype == np.float32 and b.terminations.dtype == bool


def test_missing_dataset_message_names_id_path_and_fixes(minari_root):
    with pytest.raises(DatasetNotFoundError) as err:
        load_episodes("mujoco/hopper/medium-v0")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for part in ("mujoco/hopper/medium-v0", str(minari_root), "MINARI_DATASETS_PATH", "wfdiffuser data --dataset",
                 "minari download mujoco/hopper/medium-v0"):
        assert part in msg
    with pytest.raises(DatasetNotFoundError):
        load_or_build("mujoco/hopper/medium-v0")  # not ours: never built, never downloaded


def test_existing_dataset_needs_overwrite(minari_root):
    eps = _episodes()
    write_dataset("test/pendulum/tiny-v0", eps, "Pendulum-v1")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_dataset("test/pendulum/tiny-v0", eps[:1], "Pendulum-v1")
    info = write_dataset("test/pendulum/tiny-v0", eps[:1], "Pendulum-v1", overwrite=True)
    assert info.n_episodes == 1 and info.ref_min_score is None
    assert len(load_episodes("test/pendulum/tiny-v0")[0]) == 1


def test_write_rejects_bad_input(minari_root):
    with pytest.raises(ValueError, match="both ref_min_score and ref_max_score"):
        write_dataset("test/x-v0", _episodes(), "Pendulum-v1", ref_max_score=1.0)
    with pytest.raises(ValueError, match="spaces"):
        write_dataset("test/x-v0", _episodes(), "InvertedPendulum-v5")
    assert not (minari_root / "test/x-v0").exists()


@pytest.mark.parametrize("bad", ["", "hopper", "mujoco/hopper/medium", "/medium-v0", "a//b-v0", "a b-v0"])
def test_id_grammar(bad):
    with pytest.raises(ValueError, match="name-vN|non-empty"):
        parse_dataset_id(bad)


def test_id_grammar_accepts_namespaced_ids():
    assert parse_dataset_id("wfdiffuser/inverted-pendulum/mixed-v0") == ("wfdiffuser/inverted-pendulum", "mixed", 0)
    assert parse_dataset_id("door-human-v2") == (None, "door-human", 2)


def test_build_from_spec_is_deterministic_and_stores_reference_scores(minari_root):
    spec = dataclasses.replace(OFFLINE_DATASETS["wfdiffuser/pendulum/mixed-v0"], episodes_per_level=1, max_steps=20,
                               ref_episodes=2, dataset_id="test/pendulum/mini-v0")
    info = build_from_spec(spec)
    assert info.n_episodes == 5 and info.total_steps == 100 and info.env_kwargs == {"max_episode_steps": 20}
    assert info.ref_min_score is not None and info.ref_max_score is not None
    loaded, _ = load_episodes(spec.dataset_id)
    direct = collect_episodes(spec.env_id, spec.controller, spec.levels, 1, spec.seed, 20)
    assert all(a.equals(b, atol=1e-6) for a, b in zip(loaded, direct))
    assert [e.seed for e in loaded] == [0, 1, 2, 3, 4]
    info2 = build_from_spec(spec, overwrite=True)
    assert info2 == info and all(a.equals(b) for a, b in zip(loaded, load_episodes(spec.dataset_id)[0]))


def test_runs_started_together_build_a_missing_set_once(tmp_path):
    """Two processes that both find our set missing: without the build lock the second one's writer fails on the
    half-written folder (seen with seeds launched in parallel); with it one builds and the other loads."""
    import os
    import subprocess
    import sys

    code = ("from wfdiffuser.data import load_or_build; eps, info = load_or_build('wfdiffuser/pendulum/multi-v0'); "
            "print(len(eps), round(sum(float(e.rewards.sum()) for e in eps), 3))")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    last = [out.strip().splitlines()[-1] for out, _ in outs]
    assert last[0] == last[1] and last[0].split()[0] == "80"
    assert sum("building" in out for out, _ in outs) == 1  # one process built, the other waited and loaded
