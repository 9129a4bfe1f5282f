"""Config loading, validation, overrides, presets and the CLI."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from shared.errors import ConfigError
from shared.training.config import (
    Config,
    FieldError,
    RunFolderConfig,
    build_arg_parser,
    config_field,
    get_preset,
    list_presets,
    load_config,
    parse_config,
    register_preset,
    require,
    require_in,
    require_non_negative,
    require_path_exists,
    require_positive,
    require_range,
    save_config,
    to_dict,
    validate_config,
)


@dataclass
class OptimConfig(Config):
    lr: float = config_field(3e-4, "AdamW learning rate")
    betas: tuple[float, float] = (0.9, 0.999)
    clip_range: float = config_field(1e-4, "PPO clip epsilon")
    sampler: str = config_field("flow_grpo", "SDE kind")

    def validate(self) -> None:
        require_positive(self, "lr")
        require_range(self, "clip_range", 0.0, 1.0, low_inclusive=False)
        require_in(self, "sampler", ["flow_grpo", "dance", "cps", "ddim"])


@dataclass
class DataConfig(Config):
    prompt_file: Path | None = config_field(None, "prompt file (.txt or .jsonl)")
    resolution: int = 32

    def validate(self) -> None:
        require_path_exists(self, "prompt_file", kind="file", allow_none=True)


@dataclass
class RunConfig(Config):
    """Toy run config for the tests."""

    name: str = config_field("run", "run name")
    seed: int = 0
    max_steps: int = config_field(10, "number of optimiser steps")
    use_ema: bool = True
    precision: Literal["no", "bf16", "fp16"] = "no"
    tags: list[str] = field(default_factory=list)
    group_size: int = 4
    batch_size: int = 8
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> None:
        require_positive(self, "max_steps")
        if self.batch_size % self.group_size:
            raise FieldError("batch_size", self.batch_size, f"must be a multiple of group_size={self.group_size}",
                             "set {field} to a multiple of group_size")


@register_preset(RunConfig)
def tiny() -> RunConfig:
    return RunConfig(name="tiny", max_steps=2, optim=OptimConfig(lr=1e-3))


@register_preset(RunConfig, "flow_grpo_sd35")
def _sd35() -> RunConfig:
    return RunConfig(name="sd35", group_size=24, batch_size=48, optim=OptimConfig(lr=3e-4, sampler="flow_grpo"))


def test_defaults_load_and_validate():
    cfg = load_config(RunConfig)
    assert cfg == RunConfig()
    assert validate_config(cfg) is cfg


def test_bad_field_names_field_value_and_fix():
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, {"optim": {"lr": -1.0}})
    msg = str(e.value)
    assert "'optim.lr'" in msg and "-1.0" in msg and "must be > 0" in msg
    assert "Fix:" in msg and "--set optim.lr=" in msg
    assert e.value.field == "optim.lr"


def test_choice_error_suggests_close_match():
    with pytest.raises(FieldError, match=r"optim\.sampler.*did you mean 'dance'"):
        load_config(RunConfig, overrides=["optim.sampler=danse"])


def test_range_and_cross_field_checks():
    with pytest.raises(FieldError, match=r"optim\.clip_range.*must be in \(0\.0, 1\.0\]"):
        load_config(RunConfig, {"optim": {"clip_range": 0.0}})
    with pytest.raises(FieldError, match=r"'batch_size' = 10.*multiple of group_size=4.*set batch_size"):
        load_config(RunConfig, {"batch_size": 10})


def test_path_exists(tmp_path):
    with pytest.raises(FieldError, match=r"data\.prompt_file.*does not exist"):
        load_config(RunConfig, overrides=[f"data.prompt_file={tmp_path / 'nope.txt'}"])
    with pytest.raises(FieldError, match="is a directory"):
        load_config(RunConfig, overrides=[f"data.prompt_file={tmp_path}"])
    f = tmp_path / "p.txt"
    f.write_text("a cat\n")
    assert load_config(RunConfig, overrides=[f"data.prompt_file={f}"]).data.prompt_file == f


def test_unknown_key_suggests_close_match(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*Did you mean 'lr'"):
        load_config(RunConfig, {"optim": {"lrr": 1e-3}})
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"max_step": 3}))
    with pytest.raises(ConfigError, match=r"unknown config key 'max_step' in .*c\.json.*Did you mean 'max_steps'"):
        load_config(RunConfig, p)
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrate'.*Did you mean 'optim\.lr'"):
        load_config(RunConfig, overrides=["optim.lrate=1"])


def test_override_coercion():
    cfg = load_config(RunConfig, overrides=[
        "optim.lr=1e-4", "max_steps=7", "use_ema=false", "precision=bf16", "tags=a,b",
        "optim.betas=[0.8, 0.95]", "data.prompt_file=none", "name=x=y"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.max_steps == 7 and cfg.use_ema is False and cfg.precision == "bf16"
    assert cfg.tags == ["a", "b"] and cfg.optim.betas == (0.8, 0.95) and cfg.data.prompt_file is None
    assert cfg.name == "x=y"


@pytest.mark.parametrize("override, pattern", [
    ("max_steps=ten", r"'max_steps' = 'ten'.*expected int"),
    ("use_ema=maybe", r"'use_ema'.*expected bool"),
    ("precision=fp32", r"'precision'.*expected Literal"),
    ("optim.betas=[1]", r"optim\.betas.*expected 2 items"),
    ("optim.lr", r"must look like KEY=VALUE"),
    ("tags=[a,b]", r"'tags'.*not a valid JSON list.*e\.g\. --set tags=text,text \(comma-separated\) or "
                   r"'\[\"text\", \"text\"\]' \(a JSON list\)"),
    ("seed.x=1", r"'seed' is not a nested config"),
])
def test_override_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(RunConfig, overrides=[override])


def test_file_type_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"max_steps": "many"}))
    with pytest.raises(FieldError, match=r"'max_steps' = 'many' \(from .*c\.json\): expected int"):
        load_config(RunConfig, p)
    p.write_text(json.dumps({"name": 3}))
    with pytest.raises(FieldError, match="expected str"):
        load_config(RunConfig, p)


def test_toml_json_roundtrip_and_priority(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('name = "from_file"\nmax_steps = 5\n[optim]\nlr = 2e-4\nbetas = [0.5, 0.6]\n')
    cfg = load_config(RunConfig, toml, ["max_steps=6"], preset="tiny")
    assert cfg.name == "from_file"  # file beats preset
    assert cfg.max_steps == 6  # override beats file
    assert cfg.optim.lr == 2e-4 and cfg.optim.betas == (0.5, 0.6)
    saved = save_config(cfg, tmp_path / "out" / "config.json")
    assert load_config(RunConfig, saved) == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.5, 0.6]


@pytest.mark.parametrize("content, suffix, pattern", [
    (None, ".json", "config file not found"),
    ("", ".json", "is empty"),
    ("{\"a\": 1,,}", ".json", r"not valid JSON: .* line 1"),
    ("a = = 1", ".toml", "not valid TOML"),
    ("[1, 2]", ".json", "must hold a JSON object"),
    ("x: 1", ".yaml", "unsupported config format"),
])
def test_bad_config_files(tmp_path, content, suffix, pattern):
    p = tmp_path / f"c{suffix}"
    if content is not None:
        p.write_text(content)
    with pytest.raises(ConfigError, match=pattern) as e:
        load_config(RunConfig, p)
    assert str(p) in str(e.value)


def test_presets():
    assert list_presets(RunConfig) == ["flow_grpo_sd35", "tiny"]
    a, b = get_preset(RunConfig, "tiny"), get_preset(RunConfig, "tiny")
    assert a == b and a is not b
    assert load_config(RunConfig, preset="flow_grpo_sd35").group_size == 24
    pattern = r"unknown preset 'tiney'.*Did you mean 'tiny'.*Available: flow_grpo_sd35, tiny"
    with pytest.raises(ConfigError, match=pattern):
        get_preset(RunConfig, "tiney")
    with pytest.raises(ConfigError, match="no presets are registered for OptimConfig"):
        get_preset(OptimConfig, "x")
    with pytest.raises(ValueError, match="already registered"):
        register_preset(RunConfig, "tiny")(lambda: RunConfig())


def test_cli_help_lists_fields_and_help(capsys):
    parser = build_arg_parser(RunConfig, prog="train")
    help_text = parser.format_help()
    for needle in ["--config", "--preset", "--set KEY=VALUE", "flow_grpo_sd35, tiny", "optim.lr (float) = 0.0003",
                   "AdamW learning rate", "data.prompt_file", "number of optimiser steps", "Toy run config"]:
        assert needle in help_text, needle


def test_cli_parse(tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"optim": {"lr": 5e-4}}))
    cfg, _ = parse_config(RunConfig, ["--preset", "tiny", "--config", str(p), "--set", "max_steps=3",
                                         "--set", "optim.sampler=dance"])
    assert (cfg.name, cfg.max_steps, cfg.optim.lr, cfg.optim.sampler) == ("tiny", 3, 5e-4, "dance")
    with pytest.raises(SystemExit) as e:
        parse_config(RunConfig, ["--set", "optim.lr=-1"])
    assert e.value.code == 2 and "optim.lr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parse_config(RunConfig, ["--print-config", "--set", "seed=3"])
    assert e.value.code == 0 and json.loads(capsys.readouterr().out)["seed"] == 3


class Kind(enum.Enum):
    A = "a"
    B = "b"


@dataclass
class MiscConfig(Config):
    kind: Kind = Kind.A
    weights: dict[str, float] = field(default_factory=lambda: {"clip": 1.0})
    warmup: int = 0
    out_dir: Path = Path("runs")

    def validate(self) -> None:
        require_non_negative(self, "warmup")
        require(self, "weights", sum(self.weights.values()) > 0, "weights must sum to > 0",
                "give {field} at least one positive weight")


def test_enum_dict_and_generic_require():
    cfg = MiscConfig.load(overrides=["kind=B", 'weights={"clip": 0.5, "jpeg": 2}', "out_dir=/tmp/x"])
    assert cfg.kind is Kind.B and cfg.weights == {"clip": 0.5, "jpeg": 2.0} and cfg.out_dir == Path("/tmp/x")
    assert cfg.to_dict() == {"kind": "b", "weights": {"clip": 0.5, "jpeg": 2.0}, "warmup": 0, "out_dir": "/tmp/x"}
    assert MiscConfig.load({"kind": "a"}).kind is Kind.A
    with pytest.raises(FieldError, match=r"'warmup' = -1: must be >= 0"):
        MiscConfig.load({"warmup": -1})
    with pytest.raises(FieldError, match=r"'weights'.*must sum to > 0. Fix: give weights at least one positive"):
        MiscConfig.load({"weights": {"clip": 0.0}})
    with pytest.raises(FieldError, match=r"'kind'.*choices: A, B"):
        MiscConfig.load(overrides=["kind=c"])
    assert MiscConfig.load({"warmup": -1}, validate=False).warmup == -1  # validation can be deferred


def test_required_field_without_default():
    @dataclass
    class Needs:
        path: str

    with pytest.raises(FieldError, match=r"'path' = None.*is required"):
        load_config(Needs, {})
    assert load_config(Needs, {"path": "x"}).path == "x"


@dataclass
class TunedRun(RunConfig):
    """A subclass whose nested section has another default (as chunk_grpo's GCPOConfig does)."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(sampler="dance", clip_range=5e-5))


def test_partial_section_override_keeps_the_fields_default_factory():
    cfg = load_config(TunedRun, overrides=["optim.lr=1e-5"])
    assert (cfg.optim.lr, cfg.optim.sampler, cfg.optim.clip_range) == (1e-5, "dance", 5e-5)
    cfg = load_config(TunedRun, {"optim": {"clip_range": 0.2}})
    assert (cfg.optim.lr, cfg.optim.sampler, cfg.optim.clip_range) == (3e-4, "dance", 0.2)


@dataclass
class WithDict(Config):
    kwargs: dict[str, dict] = config_field(default_factory=lambda: {"shapes": {"partial_credit": True}},
                                           help="per-name arguments")
    optim: OptimConfig = config_field(default_factory=OptimConfig, help="optimiser")


def test_set_replaces_a_dict_field_but_merges_a_section():
    """`--set kwargs={}` clears a preset's dict (a merge could never remove its keys); a section stays merged."""
    assert load_config(WithDict, overrides=["kwargs={}"]).kwargs == {}
    assert load_config(WithDict, overrides=['kwargs={"jpeg": {"quality": 80}}']).kwargs == {"jpeg": {"quality": 80}}
    cfg = load_config(WithDict, overrides=["optim.lr=1e-5"])
    assert cfg.optim.lr == 1e-5 and cfg.kwargs == {"shapes": {"partial_credit": True}}


@dataclass
class _TrainerRun(RunFolderConfig):
    dir: str = config_field("outputs/trainer", "trainer's run folder")
    save_every: int = config_field(7, "checkpoint every n steps")
    eval_every: int = config_field(3, "evaluate every n steps")

    def validate(self) -> None:
        super().validate()
        require_positive(self, "eval_every")


@dataclass
class _Trainer(Config):
    run: _TrainerRun = field(default_factory=_TrainerRun)


def test_run_folder_config_subclass_keeps_shared_fields_and_checks():
    cfg = load_config(_Trainer, overrides=["run.keep_last=4", "run.resume=false"])
    assert (cfg.run.dir, cfg.run.save_every, cfg.run.keep_last, cfg.run.resume, cfg.run.progress) == \
        ("outputs/trainer", 7, 4, False, True)
    assert [f for f in to_dict(cfg)["run"]] == ["dir", "resume", "save_every", "keep_last", "progress", "eval_every"]
    for override, name in [("run.dir=", "run.dir"), ("run.keep_last=0", "run.keep_last"),
                           ("run.save_every=-1", "run.save_every"), ("run.eval_every=0", "run.eval_every")]:
        with pytest.raises(FieldError, match=name.replace(".", r"\.")):
            load_config(_Trainer, overrides=[override])
