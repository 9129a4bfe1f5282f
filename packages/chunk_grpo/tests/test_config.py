"""GCPOConfig: presets, validation errors that name the field, the CLI's help / print-config, the train wiring."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from shared.flow_grpo.config import RunConfig
from shared.training import FieldError, get_preset, list_presets, load_config, to_dict

from chunk_grpo.cli import main
from chunk_grpo.config import ChunkConfig, GCPOConfig
from chunk_grpo.selector import ChunkSelector

PRESETS = ["flux-dev-hpsv3", "sd35m", "shapes"]


@pytest.fixture
def paths(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\n")
    return model, prompts


def _overrides(preset: str, paths) -> list[str]:
    model, prompts = paths
    return [f"model.path={model}"] + ([f"prompts.file={prompts}"] if preset != "shapes" else [])


def _load(preset: str, paths, *extra: str) -> GCPOConfig:
    return load_config(GCPOConfig, overrides=_overrides(preset, paths) + list(extra), preset=preset)


def test_presets_are_registered():
    assert list_presets(GCPOConfig) == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads(preset, paths):
    cfg = _load(preset, paths)
    assert isinstance(cfg, GCPOConfig) and cfg.train.units == "custom"
    n = len(cfg.sample.sde_steps) or cfg.sample.num_steps - cfg.chunk.drop_last
    assert sum(cfg.chunk.sizes) == n  # all three use fixed chunks over the trained (stochastic) transitions


def test_flux_preset_is_table_8(paths):
    cfg = _load("flux-dev-hpsv3", paths)
    s, t, c, r = cfg.sample, cfg.train, cfg.chunk, cfg.run
    assert (s.num_steps, c.drop_last, c.sizes) == (17, True, [2, 3, 4, 7])  # 17 sampled, 16 trained transitions
    assert (s.kind, s.noise_level, s.schedule, s.shift) == ("flow_grpo", 0.7, "dance", 3.0)
    assert (s.resolution, s.group_size, s.guidance_scale, s.same_noise_per_group) == (720, 12, 1.0, True)
    assert (cfg.lora.rank, t.lr, t.weight_decay, t.max_grad_norm) == (0, 1e-5, 1e-4, 0.01)
    assert (t.clip_low, t.clip_high, t.adv_clip, t.adv_std, t.kl_beta, t.iterations) == (5e-5, 5e-5, 5.0, "group",
                                                                                           0.0, 150)
    assert (c.sampling, c.weight_method, c.timestep_fraction) == ("weighted", "normalized", 0.5)
    assert (r.eval_steps, r.eval_hybrid_steps) == (50, 30)
    assert cfg.reward.names == ["hpsv2"]  # HPSv3 is not registered in shared.rewards


def test_shapes_preset_extends_shared_shapes(paths):
    base, cfg = get_preset(RunConfig, "shapes"), get_preset(GCPOConfig, "shapes")
    assert (cfg.reward, cfg.prompts, cfg.model, cfg.lora) == (base.reward, base.prompts, base.model, base.lora)
    assert (cfg.sample.num_steps, cfg.sample.kind, cfg.sample.noise_level) == (8, "flow_grpo", 0.7)
    assert cfg.sample.sde_steps == [0, 1, 2, 3]  # the high-noise window that learns on CPU
    assert (cfg.chunk.chunking, cfg.chunk.sizes, cfg.chunk.sampling) == ("fixed", [2, 2], "all")
    assert ChunkSelector(cfg.chunk, window=4)(8, 2) == [[[0, 1], [2, 3]]] * 2
    assert cfg.run.dir == "outputs/chunk_grpo_shapes"
    # three times shared's 12 iterations: the measured default (docs/results/shapes_rl.md)
    assert to_dict(cfg.train) == {**to_dict(base.train), "units": "custom", "iterations": 36}


def test_sd35m_preset_keeps_flow_grpo_settings(paths):
    base, cfg = get_preset(RunConfig, "flow_grpo"), get_preset(GCPOConfig, "sd35m")
    assert (to_dict(cfg.sample), cfg.lora, cfg.reward) == (to_dict(base.sample), base.lora, base.reward)
    assert to_dict(cfg.train) == {**to_dict(base.train), "units": "custom"}
    assert (cfg.chunk.sizes, cfg.chunk.drop_last) == ([2, 3, 4], True)  # Flow-GRPO's first 9 of 10 steps


@pytest.mark.parametrize(("overrides", "field"), [
    (["train.units=in_order"], "train.units"),
    (["chunk.sizes=2,3,4"], "chunk.sizes"),  # 9 ≠ the 4 stochastic steps of the shapes preset
    (["chunk.sizes=2,2,2"], "chunk.sizes"),  # 6 ≠ 4
    (["sample.sde_steps=1,2,3,4"], "sample.sde_steps"),  # GCPO chunks cover a prefix 0 … m−1
    (["chunk.chunking=temporal"], "chunk.chunking"),
    (["chunk.timestep_fraction=0.5"], "chunk.timestep_fraction"),  # sampling=all trains every chunk
    (["chunk.sampling=weighted", "chunk.timestep_fraction=0"], "chunk.timestep_fraction"),
    (["chunk.min_chunk=5"], "chunk.min_chunk"),  # > max_chunk
    (["chunk.max_order=-1"], "chunk.max_order"),
    (["chunk.weight_method=max"], "chunk.weight_method"),
    (["chunk.adaptive_scope=prompt"], "chunk.adaptive_scope"),
    (["chunk.sampling=sometimes"], "chunk.sampling"),
    (["chunk.chunking=uniform", "chunk.size=9"], "chunk.size"),
    (["chunk.chunking=adaptive", "chunk.max_chunk=9", "chunk.min_chunk=9"], "chunk.min_chunk"),  # > 4 steps
    (["sample.num_steps=1", "sample.sde_steps=", "chunk.sizes=1", "chunk.drop_last=true"], "chunk.drop_last"),
    (["sample.sde_steps=", "chunk.drop_last=false"], "chunk.sizes"),  # [2,2] sums to 4, but all 8 would be trained
])
def test_validation_errors_name_the_field(overrides, field, paths):
    with pytest.raises(FieldError) as err:
        _load("shapes", paths, *overrides)
    assert err.value.field == field and f"'{field}'" in str(err.value)


def test_defaults_are_valid_and_the_selector_fits_the_protocol(paths):
    from shared.flow_grpo.units import UnitSelector

    cfg = load_config(GCPOConfig, overrides=[f"model.path={paths[0]}"])
    assert cfg.chunk.sizes == [2, 3, 4, 7] and cfg.sample.num_steps == 17 and cfg.chunk.drop_last
    assert cfg.train.units == "custom"
    # overriding one field of a section keeps GCPO's defaults of the others (no preset involved)
    cfg = load_config(GCPOConfig, overrides=[f"model.path={paths[0]}", "train.lr=1e-3", "sample.group_size=2",
                                             "run.eval_every=0"])
    assert (cfg.train.units, cfg.sample.num_steps, cfg.run.dir) == ("custom", 17, "outputs/chunk_grpo")
    assert isinstance(ChunkSelector(cfg.chunk), UnitSelector)


# ------------------------------------------------------------------------------------------------------- CLI


def test_help_lists_every_chunk_option(capsys):
    for argv in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for f in dataclasses.fields(ChunkConfig):
            assert f"chunk.{f.name} " in out, (argv, f.name)
        assert "train.units" in out and "--preset" in out
    with pytest.raises(SystemExit):
        main(["l1rel", "--help"])
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--model", "--out", "--prompts", "--num-steps", "--sizes", "--max-order"))


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "chunk_grpo", "--help"], capture_output=True, text=True, check=True)
    assert "chunk.adaptive_scope" in out.stdout and "l1rel" in out.stdout


def test_print_config_and_bad_config(paths, capsys):
    model = paths[0]
    assert main(["train", "--preset", "shapes", "--set", f"model.path={model}", "--set", "chunk.chunking=adaptive",
                 "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["chunk"]["chunking"] == "adaptive" and printed["train"]["units"] == "custom"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--preset", "shapes", "--set", f"model.path={model}", "--set", "chunk.sizes=2,3"])
    assert exit_.value.code == 2 and "chunk.sizes" in capsys.readouterr().err


def test_train_hands_the_chunk_selector_to_the_shared_trainer(monkeypatch, paths, capsys):
    import shared.flow_grpo.train as flow_train

    from chunk_grpo.train import train

    seen = []

    def fake(cfg, *, pipeline=None, selector=None):
        seen.append((cfg, pipeline, selector))
        return {"reward_mean": 0.5, "time_iteration_s": 1.0}

    monkeypatch.setattr(flow_train, "train", fake)
    cfg = _load("shapes", paths, "chunk.chunking=adaptive")
    assert train(cfg, pipeline="PIPE") == {"reward_mean": 0.5, "time_iteration_s": 1.0}
    got_cfg, pipe, selector = seen[-1]
    assert got_cfg is cfg and pipe == "PIPE" and isinstance(selector, ChunkSelector) and selector.config is cfg.chunk
    assert selector.window == 4  # chunks cover the preset's 4 stochastic transitions
    assert main(["train", "--preset", "shapes", "--set", f"model.path={paths[0]}"]) == 0
    assert seen[-1][0].chunk.sizes == [2, 2] and '"reward_mean": 0.5' in capsys.readouterr().out
