"""Flow-GRPO trainer pieces without a model: unit selection and layouts, unit ratios, config validation, presets,
--help."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from shared.errors import ConfigError
from shared.flow_grpo.config import RunConfig
from shared.flow_grpo.objective import segment_mean, unit_log_prob, unit_ratio
from shared.flow_grpo.train import resolve_selector, unit_weights
from shared.flow_grpo.units import Chunks, InOrderSteps, RandomSteps, UnitSelector, build_selector, check_units, slots
from shared.losses import clipped_surrogate
from shared.training import Config, FieldError, build_arg_parser, config_field, load_config, to_dict
from shared.training.config import _field_paths

MODEL_DIR_FILES = ("model_index.json",)


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """A folder that passes model.path validation (the config never loads weights)."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "model_index.json").write_text("{}")
    return d


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("a photo of a cat\na photo of a dog\n")
    return p


def _preset(name: str, model: Path, prompts: Path) -> RunConfig:
    return load_config(RunConfig, preset=name, overrides=[f"model.path={model}", f"prompts.file={prompts}"])


def test_flow_grpo_preset_trains_first_steps_in_order(fake_model, prompt_file):
    cfg = _preset("flow_grpo", fake_model, prompt_file)
    sel = build_selector(cfg.train)
    assert isinstance(sel, UnitSelector)
    units = sel(cfg.sample.num_steps, 3, torch.Generator().manual_seed(0))
    assert units == [[[k] for k in range(9)]] * 3  # T = 10, f = 0.99 → steps 0..8, the last never trained
    s, t = cfg.sample, cfg.train
    assert (s.kind, s.noise_level, s.guidance_scale, s.group_size) == ("flow_grpo", 0.7, 4.5, 24)
    assert (t.adv_std, t.adv_eps, t.adv_clip, t.clip_low, t.kl_convention) == ("batch", 1e-4, 5.0, 1e-4, "flow_grpo")
    assert t.kl_beta > 0 and cfg.lora.rank == 32 and cfg.lora.alpha == 64 and t.steps_per_rollout == 2


def test_dance_grpo_preset_trains_random_subsets_without_last_step(fake_model, prompt_file):
    cfg = _preset("dance_grpo", fake_model, prompt_file)
    units = build_selector(cfg.train)(cfg.sample.num_steps, 4, torch.Generator().manual_seed(0))
    steps = [[u[0] for u in sample_units] for sample_units in units]
    assert all(len(s) == 9 == len(set(s)) for s in steps)  # T = 16: ⌊15 · 0.6⌋ = 9 distinct steps
    assert all(15 not in s and all(0 <= k < 15 for k in s) for s in steps)  # last transition dropped
    assert len({tuple(s) for s in steps}) > 1  # independent per sample
    s, t = cfg.sample, cfg.train
    assert (s.kind, s.noise_level, s.schedule, s.same_noise_per_group, s.guidance_scale) == ("dance", 0.3, "dance",
                                                                                             True, 1.0)
    assert (t.adv_std, t.adv_unbiased, t.adv_eps, t.kl_beta, cfg.prompts.spread_groups) == ("group", True, 1e-8,
                                                                                            0.0, False)


def test_shapes_preset_validates():
    root = Path(__file__).resolve().parents[2]  # the committed base (assets/shapes_base) must validate
    cfg = load_config(RunConfig, preset="shapes", overrides=[f"model.path={root / 'assets' / 'shapes_base'}"])
    assert cfg.reward.names == ["shapes"] and cfg.prompts.source == "shapes"


def test_builtin_selectors_accept_and_ignore_traj():
    for sel in (InOrderSteps(0.5), RandomSteps(0.5), Chunks([1, 3])):
        assert isinstance(sel, UnitSelector)
        a = sel(4, 2, torch.Generator().manual_seed(3), traj=object())
        assert a == sel(4, 2, torch.Generator().manual_seed(3))
    assert Chunks([1, 3])(4, 2) == [[[0], [1, 2, 3]]] * 2
    assert InOrderSteps(0.5)(4, 1) == [[[0], [1]]]


def test_slots_of_a_variable_layout():
    # GCPO weighted chunk sampling: chunks {0, 3} of sizes [2, 7] for sample 0, {1, 2} of sizes [3, 4] for sample 1
    units = [[[0, 1], [9, 10, 11, 12, 13, 14, 15]], [[2, 3, 4], [5, 6, 7, 8]], [[7]]]
    got = slots(units)
    assert [(s.index, s.rows, s.max_size) for s in got] == [(0, [0, 1, 2], 3), (1, [0, 1], 7)]
    assert got[1].steps == [[9, 10, 11, 12, 13, 14, 15], [5, 6, 7, 8]]
    rows, steps, segments = got[0].flat()  # sample-major (sample, step) pairs of slot 0
    assert rows.tolist() == [0, 0, 1, 1, 1, 2]
    assert steps.tolist() == [0, 1, 2, 3, 4, 7]
    assert segments.tolist() == [0, 0, 1, 1, 1, 2]
    # w_i = 1/(n_i·B): summing w_i over every (sample, unit) gives 1, the mean over samples of the mean over units
    w = unit_weights(units, 3)
    torch.testing.assert_close(w, torch.tensor([1 / 6, 1 / 6, 1 / 3]))
    assert sum(w[i].item() for s in got for i in s.rows) == pytest.approx(1.0)


def test_segment_mean():
    values = torch.tensor([1.0, 3.0, 2.0, 4.0, 6.0, 5.0], requires_grad=True)
    out = segment_mean(values, torch.tensor([0, 0, 1, 1, 1, 2]), 3)
    torch.testing.assert_close(out, torch.tensor([2.0, 4.0, 5.0]))
    out.sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0]))


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ([[[0]]], "units for 1 samples, the rollout has 2"),
        ([[[0]], []], "sample 1 has no unit"),
        ([[[0]], [[1], []]], "sample 1 unit 1 is empty"),
        ([[[0]], [[1, 4]]], r"sample 1 unit 0 has steps \[4\] outside \[0, 4\)"),
        ([[[0]], [[-1]]], "outside"),
        ([[[0]], [[3]]], "sampled deterministically"),
        ([[[0, 1], [1]], [[2]]], r"sample 0 trains steps \[1\] more than once"),
        ([[[2, 2]], [[2]]], "more than once"),
        ([[[0.5]], [[1]]], "not an integer step index"),
        ([[[True]], [[1]]], "bool"),
    ],
)
def test_check_units_rejects_bad_units(units, message):
    mask = torch.tensor([True, True, True, False])  # step 3 was deterministic
    with pytest.raises(ValueError, match=message):
        check_units(units, batch=2, sde_mask=mask)


def test_check_units_returns_plain_ints():
    import numpy as np

    units = [[[np.int64(2), torch.tensor(0)], [1]], [[3]]]
    out = check_units(units, batch=2, sde_mask=torch.ones(4, dtype=torch.bool))
    assert out == [[[2, 0], [1]], [[3]]] and all(type(s) is int for u in out[0] for s in u)


def test_unit_ratio_one_step_and_all_steps():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(6, 5, generator=g) * 0.01 - 1.0
    new = old + torch.randn(6, 5, generator=g) * 1e-3
    adv = torch.randn(6, generator=g)
    # a one-step unit's ratio is that step's ratio
    assert torch.equal(unit_ratio(new[:, 2:3], old[:, 2:3]), torch.exp(new[:, 2] - old[:, 2]))
    # a unit of all steps is the sequence-level (GSPO) ratio of shared.losses
    unit = clipped_surrogate(unit_log_prob(new), unit_log_prob(old), adv, clip_low=2e-4)
    seq = clipped_surrogate(new, old, adv, clip_low=2e-4, ratio_level="sequence")
    torch.testing.assert_close(unit.loss, seq.loss, rtol=1e-6, atol=1e-8)
    for k in ("ratio_mean", "ratio_min", "ratio_max", "clipfrac_low", "clipfrac_high"):
        assert unit.metrics[k] == pytest.approx(seq.metrics[k], rel=1e-6), k
    torch.testing.assert_close(unit_ratio(new, old), torch.exp((new - old).mean(dim=1)))
    # ... and the geometric mean of the step ratios
    torch.testing.assert_close(unit_ratio(new, old), torch.exp(new - old).prod(dim=1) ** (1 / 5))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.clip_low=-0.1", "train.clip_low"),
        ("train.units=windows", "train.units"),
        ("sample.kind=ddpm", "sample.kind"),
        ("sample.noise_level=0", "sample.noise_level"),
        ("train.fraction=0.1", "train.fraction"),
        ("train.kl_beta=-1", "train.kl_beta"),
        ("reward.names=no_such_reward", "reward.names"),
        ("prompts.source=file", "prompts.file"),
        ("sample.same_noise_per_group=true", "sample.same_noise_per_group"),
        ("train.units=chunks", "train.chunk_sizes"),
        ("sample.group_size=0", "sample.group_size"),
        ("model.mixed_precision=fp8", "model.mixed_precision"),
        ("run.eval_hybrid_steps=21", "run.eval_hybrid_steps"),  # > run.eval_steps = 20
        ("run.eval_hybrid_steps=-1", "run.eval_hybrid_steps"),
        ("sample.sde_steps=0,4", "sample.sde_steps"),  # outside [0, num_steps = 4)
        ("sample.sde_steps=1,2", "sample.sde_steps"),  # not a prefix 0 … m−1
        ("run.eval_tags=single_object,nonsense", "run.eval_tags"),
    ],
)
def test_bad_config_names_the_field(fake_model, tmp_path, override, field):
    with pytest.raises(FieldError) as info:
        load_config(RunConfig, overrides=[f"model.path={fake_model}", "sample.num_steps=4", override])
    assert info.value.field == field
    assert "Fix:" in str(info.value) and field in str(info.value)


def test_missing_model_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model.path"):
        load_config(RunConfig, overrides=[f"model.path={tmp_path / 'nothing'}"])


def test_help_lists_every_option():
    text = build_arg_parser(RunConfig, prog="python -m shared.flow_grpo").format_help()
    for path in _field_paths(RunConfig):
        assert f"  {path}" in text, path
    assert "flow_grpo" in text and "dance_grpo" in text and "shapes" in text  # presets listed


def test_custom_units_skip_the_step_checks_and_need_a_selector(fake_model):
    # in_order with fraction 0.1 of 4 steps selects nothing; chunks without sizes are invalid; custom checks neither
    cfg = load_config(RunConfig, overrides=[f"model.path={fake_model}", "sample.num_steps=4", "train.units=custom",
                                            "train.fraction=0.1"])
    with pytest.raises(FieldError) as info:
        resolve_selector(cfg, None)
    assert info.value.field == "train.units" and "selector=" in str(info.value)
    mine = Chunks([4])
    assert resolve_selector(cfg, mine) is mine
    ok = load_config(RunConfig, overrides=[f"model.path={fake_model}", "sample.num_steps=4"])
    assert resolve_selector(ok, mine) is mine  # a given selector wins whatever train.units says
    assert isinstance(resolve_selector(ok, None), InOrderSteps)
    assert "chunk_grpo" in build_arg_parser(RunConfig).format_help()


def test_eval_hybrid_steps_accepts_up_to_eval_steps(fake_model):
    cfg = load_config(RunConfig, overrides=[f"model.path={fake_model}", "run.eval_steps=5", "run.eval_hybrid_steps=5"])
    assert cfg.run.eval_hybrid_steps == 5
    with pytest.raises(FieldError, match="run.eval_hybrid_steps"):
        load_config(RunConfig, overrides=[f"model.path={fake_model}", "run.eval_steps=5", "run.eval_hybrid_steps=6"])


@dataclass
class _ChunkSection(Config):
    sizes: list[int] = config_field(default_factory=lambda: [2, 2], help="chunk sizes")


@dataclass
class _SubConfig(RunConfig):
    chunk: _ChunkSection = config_field(default_factory=_ChunkSection, help="a package's own section")


def test_run_config_is_subclassable(fake_model):
    cfg = load_config(_SubConfig, overrides=[f"model.path={fake_model}", "train.units=custom", "chunk.sizes=1,3"])
    assert cfg.chunk.sizes == [1, 3] and to_dict(cfg)["chunk"] == {"sizes": [1, 3]}
    assert "  chunk.sizes" in build_arg_parser(_SubConfig).format_help()


def test_sde_window_restricts_every_builtin_selector(fake_model):
    """sample.sde_steps = 0 … m−1: units only ever name stochastic steps, and the config refuses more."""
    base = [f"model.path={fake_model}", "sample.num_steps=8", "sample.sde_steps=0,1,2"]
    gen = torch.Generator().manual_seed(0)
    cfg = load_config(RunConfig, overrides=base + ["train.units=in_order", "train.fraction=0.375"])
    assert resolve_selector(cfg, None)(8, 2, gen) == [[[0], [1], [2]]] * 2
    with pytest.raises(FieldError) as info:  # ⌊8 · 0.5⌋ = 4 steps > 3 stochastic ones
        load_config(RunConfig, overrides=base + ["train.units=in_order", "train.fraction=0.5"])
    assert info.value.field == "train.fraction" and "only 3 are stochastic" in str(info.value)
    cfg = load_config(RunConfig, overrides=base + ["train.units=random", "train.fraction=0.67"])
    draws = [resolve_selector(cfg, None)(8, 1, gen)[0] for _ in range(200)]
    seen = {u[0] for d in draws for u in d}
    assert all(len(d) == 2 for d in draws) and seen == {0, 1, 2}  # ⌊3 · 0.67⌋ = 2 of the 3, never an ODE step
    cfg = load_config(RunConfig, overrides=base + ["train.units=chunks", "train.chunk_sizes=1,2"])
    assert resolve_selector(cfg, None)(8, 1, gen) == [[[0], [1, 2]]]
    with pytest.raises(FieldError) as info:
        load_config(RunConfig, overrides=base + ["train.units=chunks", "train.chunk_sizes=2,2"])
    assert info.value.field == "train.chunk_sizes"
    mask = torch.tensor([True] * 3 + [False] * 5)
    with pytest.raises(ValueError, match="stochastic|sde"):  # the trainer's own check, should a selector err
        check_units([[[3]]], batch=1, sde_mask=mask)


def test_eval_tags_choose_the_evaluation_prompts(fake_model):
    from shared.flow_grpo.evaluation import eval_records

    cfg = load_config(RunConfig, overrides=[f"model.path={fake_model}", "prompts.tags=colors",
                                            "run.eval_per_tag=3"])
    assert {r["tag"] for r in eval_records(cfg, [])} == {"colors"}
    cfg = load_config(RunConfig, overrides=[f"model.path={fake_model}", "prompts.tags=colors", "run.eval_per_tag=3",
                                            "run.eval_tags=colors,counting,position"])
    records = eval_records(cfg, [])
    assert len(records) == 9 and {r["tag"] for r in records} == {"colors", "counting", "position"}


def test_sde_window_reaches_the_sampler(fake_model):
    from types import SimpleNamespace

    from shared.flow_grpo.model import sampler_config

    cfg = load_config(RunConfig, overrides=[f"model.path={fake_model}", "sample.num_steps=6", "sample.sde_steps=1,0",
                                            "train.fraction=0.3"])
    policy = SimpleNamespace(resolution=32)
    assert sampler_config(cfg, policy, 4).sde_mask().tolist() == [True, True, False, False, False, False]
    assert sampler_config(cfg, policy, 4, ode=True).sde_steps is None  # evaluation stays a plain ODE


from shared.flow_grpo.config import RunDirConfig, extend_run_config  # noqa: E402


@dataclass
class _MyRunDir(RunDirConfig):
    dir: str = config_field("outputs/mine", "run folder")


@dataclass
class _Mine(RunConfig):
    run: _MyRunDir = config_field(default_factory=_MyRunDir, help="outputs")
    extra: int = config_field(3, "a package's own field")


def test_extend_run_config_retypes_sections_and_applies_changes():
    from shared.training import get_preset

    base = get_preset(RunConfig, "shapes")
    cfg = extend_run_config(_Mine, base, run={"dir": "outputs/x"}, train={"lr": 1e-5})
    assert type(cfg.run) is _MyRunDir and cfg.run.dir == "outputs/x" and cfg.run.eval_every == base.run.eval_every
    assert cfg.train.lr == 1e-5 and base.train.lr == 3e-3  # the preset object is not modified
    assert cfg.sample == base.sample and cfg.extra == 3
