"""The flow-matching GRPO trainer's config: one validated dataclass tree and three presets.

    cfg = load_config(RunConfig, preset="shapes", overrides=["train.lr=1e-4"])   # ConfigError names a bad field

Sections: ``model`` (pipeline folder, precision), ``lora``, ``prompts``, ``reward``, ``sample`` (rollout SDE, CFG,
group size), ``train`` (trained units, advantages, clipped loss, KL, optimiser, EMA) and ``run`` (run dir,
checkpoints, evaluation). Presets (shared_core.md §8):

* ``flow_grpo``  Flow-GRPO SD3.5-M: flow_grpo SDE a = 0.7, 10 steps, CFG 4.5 in sampling and training, G = 24,
  48 prompts per iteration, first ⌊T·0.99⌋ steps in order, batch-std advantages + 1e-4, clip 1e-4, adv clip 5,
  Gaussian-mean KL β = 0.01 (PickScore setting; 0.04 for GenEval/OCR), LoRA r32/α64 on attention, AdamW 3e-4,
  wd 1e-4, fp16, max grad norm 1, 2 optimiser steps per rollout, EMA 0.9 every 8. [authors' code: flow_grpo]
* ``dance_grpo`` DanceGRPO FLUX.1-dev: dance SDE η = 0.3, 16 steps on the shift-3 schedule, no CFG, G = 12, random
  ⌊(T−1)·0.6⌋ steps per sample (last transition dropped), per-group unbiased std + 1e-8, no KL, full fine-tune
  lr 1e-5, bf16, shared initial noise per group, EMA 0.995. [authors' code: DanceGRPO]
* ``shapes``     the tiny shapes-world base (assets/shapes_base) on CPU, reward "shapes", about 15 minutes on one core.

The two paper presets need the local model folder, a prompt file and the reward's weights folder:
``--set model.path=... --set prompts.file=... --set reward.kwargs='{"pickscore": {"model_dir": "..."}}'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.training import (
    Config,
    RunFolderConfig,
    config_field,
    register_preset,
    require,
    require_in,
    require_int,
    require_non_negative,
    require_positive,
    require_range,
)

__all__ = [
    "ADV_STD_MODES",
    "extend_run_config",
    "KL_CONVENTIONS",
    "LoraConfig",
    "ModelConfig",
    "PromptConfig",
    "RewardConfig",
    "RunConfig",
    "RunDirConfig",
    "SampleConfig",
    "TrainConfig",
    "UNIT_KINDS",
]

UNIT_KINDS = ("in_order", "random", "chunks", "custom")
ADV_STD_MODES = ("batch", "group", "none")
KL_CONVENTIONS = ("flow_grpo", "exact")
SDE_KINDS = ("flow_grpo", "dance", "cps", "ddim")  # ddim: DDPO's DDIM (eta = noise_level) for SD 1.x
SCHEDULES = ("model", "dance")
PRECISIONS = ("no", "fp16", "bf16")
PROMPT_SOURCES = ("shapes", "file")
SD3_ATTN = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
            "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]



def _require_tags(cfg: Config, name: str) -> None:
    """``cfg.<name>`` lists shapes-world GenEval tags only (empty is fine)."""
    from shared.shapes import TAGS

    bad = [t for t in getattr(cfg, name) if t not in TAGS]
    require(cfg, name, not bad, f"has unknown tags {bad}",
            f"use a subset of {', '.join(TAGS)}, e.g. --set {{field}}=colors,counting")


@dataclass
class ModelConfig(Config):
    path: str = config_field("assets/shapes_base", "local diffusers pipeline folder (SD3/SD3.5 or FLUX; "
                             "model_index.json inside); no hub ids")
    mixed_precision: str = config_field("no", "autocast dtype on GPU: no | fp16 | bf16 (log-prob math stays fp32)")
    gradient_checkpointing: bool = config_field(False, "recompute transformer activations in backward")
    cpu: bool = config_field(False, "force CPU even when a GPU is present")

    def validate(self) -> None:
        from shared.demo import resolve_model

        try:
            resolve_model(self.path)
        except FileNotFoundError:
            require(self, "path", False, "is not a pipeline folder (no such directory)",
                    "point {field} at a folder written by save_pretrained, e.g. --set {field}=assets/shapes_base")
        require(self, "path", (Path(resolve_model(self.path)) / "model_index.json").is_file(),
                "has no model_index.json", "point {field} at a diffusers pipeline folder (save_pretrained layout)")
        require_in(self, "mixed_precision", PRECISIONS)


@dataclass
class LoraConfig(Config):
    rank: int = config_field(0, "LoRA rank; 0 = full fine-tune of the transformer (needs the `peft` package if > 0)")
    alpha: float = config_field(0.0, "LoRA alpha (scale alpha/rank); 0 means alpha = rank")
    targets: list[str] = config_field(default_factory=lambda: list(SD3_ATTN),
                                      help="module-name suffixes that get LoRA adapters")

    def validate(self) -> None:
        require_int(self, "rank", 0)
        require_non_negative(self, "alpha")
        require(self, "targets", self.rank == 0 or len(self.targets) > 0, "is empty while rank > 0",
                "list module names, e.g. --set {field}=attn.to_q,attn.to_k,attn.to_v,attn.to_out.0")
        if self.rank > 0:
            import importlib.util

            require(self, "rank", importlib.util.find_spec("peft") is not None,
                    "needs the `peft` package, which is not installed",
                    "install peft (pip install peft) or set {field}=0 for a full fine-tune")


@dataclass
class PromptConfig(Config):
    source: str = config_field("shapes", "shapes (shapes-world GenEval generator) | file (.txt or .jsonl)")
    file: str = config_field("", "prompt file for source=file (.txt one per line, .jsonl {\"prompt\": ...})")
    tags: list[str] = config_field(default_factory=list, help="shapes tags to train on (empty = all six)")
    pool_size: int = config_field(1000, "number of shapes training prompts generated (seeded by train.seed)")
    per_iteration: int = config_field(4, "prompts (groups) per iteration over all processes")
    spread_groups: bool = config_field(True, "spread a group's G copies over processes (Flow-GRPO); false keeps "
                                       "whole groups on one process (DanceGRPO; required by shared noise)")

    def validate(self) -> None:
        require_in(self, "source", PROMPT_SOURCES)
        if self.source == "file":
            require(self, "file", bool(self.file) and Path(self.file).is_file(), "is not an existing prompt file",
                    "set {field} to a .txt or .jsonl prompt file, e.g. --set {field}=prompts.txt")
        _require_tags(self, "tags")
        require_int(self, "pool_size", 1)
        require_int(self, "per_iteration", 1)


@dataclass
class RewardConfig(Config):
    names: list[str] = config_field(default_factory=lambda: ["shapes"],
                                    help="rewards from shared.rewards by name; several are summed with weights")
    weights: list[float] = config_field(default_factory=list, help="one weight per name (empty = all 1)")
    kwargs: dict[str, dict] = config_field(default_factory=dict,
                                           help='constructor arguments per reward, e.g. {"shapes": {"partial_credit": true}}')

    def validate(self) -> None:
        from shared.rewards import available_rewards

        require(self, "names", len(self.names) > 0, "is empty", "name a reward, e.g. --set {field}=shapes")
        known = available_rewards()
        bad = [n for n in self.names if n not in known]
        require(self, "names", not bad, f"has unknown rewards {bad}",
                f"use registered names ({', '.join(known)}), e.g. --set {{field}}=shapes")
        require(self, "weights", not self.weights or len(self.weights) == len(self.names),
                f"has {len(self.weights)} entries for {len(self.names)} names", "give one weight per name or none")
        extra = [k for k in self.kwargs if k not in self.names]
        require(self, "kwargs", not extra, f"has arguments for rewards not in names: {extra}",
                "key kwargs by a name listed in reward.names")


@dataclass
class SampleConfig(Config):
    num_steps: int = config_field(10, "sampling steps T")
    kind: str = config_field("flow_grpo", "SDE family: flow_grpo (noise a) | dance (constant eta) | cps | ddim "
                             "(SD 1.x: DDIM's eta-step, DDPO log-probs)")
    noise_level: float = config_field(0.7, "a for flow_grpo / cps, eta for dance and ddim (> 0; ddim: <= 1)")
    schedule: str = config_field("model", "sigmas: model (the pipeline's scheduler) | dance (shift schedule)")
    shift: float = config_field(3.0, "time shift of schedule=dance")
    guidance_scale: float = config_field(1.0, "CFG scale in sampling AND training (1 = no CFG)")
    negative_prompt: str = config_field("", "negative prompt for CFG")
    detach_uncond: bool = config_field(False, "stop gradients through the unconditional CFG branch")
    resolution: int = config_field(0, "image height = width in pixels; 0 = the model's native sample size")
    group_size: int = config_field(4, "G images per prompt")
    micro_batch_size: int = config_field(0, "rollout and training micro-batch per process; 0 = the whole part")
    same_noise_per_group: bool = config_field(False, "one initial noise per group (DanceGRPO option)")
    sde_steps: list[int] = config_field(default_factory=list,
                                        help="transitions drawn with the SDE, the others deterministic Euler (ODE) "
                                             "and never trained (MixGRPO / Flow-GRPO-Fast window); empty = all")

    def validate(self) -> None:
        require_int(self, "num_steps", 1)
        require_in(self, "kind", SDE_KINDS)
        require(self, "noise_level", isinstance(self.noise_level, float | int) and self.noise_level > 0,
                "must be > 0 (0 is the deterministic ODE, which has no log-prob to train)",
                "set {field} to e.g. 0.7 (flow_grpo) or 0.3 (dance)")
        require(self, "noise_level", self.kind != "ddim" or self.noise_level <= 1, "is DDIM's eta and must be <= 1",
                "set {field} to an eta in (0, 1], e.g. 1.0 (DDPO)")
        require_in(self, "schedule", SCHEDULES)
        require_positive(self, "shift")
        require_range(self, "guidance_scale", 1.0, None)
        require_int(self, "resolution", 0)
        require_int(self, "group_size", 1)
        require_int(self, "micro_batch_size", 0)
        bad = [k for k in self.sde_steps if not (isinstance(k, int) and 0 <= k < self.num_steps)]
        require(self, "sde_steps", not bad, f"has steps {bad} outside [0, num_steps={self.num_steps})",
                "list transition indices below sample.num_steps, e.g. --set {field}=0,1,2, or leave it empty")


@dataclass
class TrainConfig(Config):
    iterations: int = config_field(20, "rollout → update iterations")
    units: str = config_field("in_order", "trained units: in_order (Flow-GRPO) | random (DanceGRPO) | "
                              "chunks (GCPO; one ratio per chunk) | custom (a selector object passed to "
                              "train(..., selector=...) by a package such as chunk_grpo)")
    fraction: float = config_field(0.99, "fraction of steps trained (in_order: first ⌊T·f⌋; random: ⌊(T−1)·f⌋)")
    drop_last: bool = config_field(True, "random: never train the last transition (DanceGRPO)")
    chunk_sizes: list[int] = config_field(default_factory=list, help="chunks: sizes summing to num_steps")
    batched_units: bool = config_field(True, "one transformer forward for all steps of a unit slot per micro-batch "
                                       "(GCPO's batched chunk forward); false: one forward per step position")
    adv_std: str = config_field("batch", "advantage scale: batch (Flow-GRPO) | group (DanceGRPO) | none")
    adv_eps: float = config_field(1e-4, "advantage denominator eps")
    adv_unbiased: bool = config_field(False, "n−1 std (DanceGRPO) instead of the population std")
    adv_clip: float = config_field(5.0, "clip advantages to ±this (0 = off)")
    clip_low: float = config_field(1e-4, "ratio clip ε below 1")
    clip_high: float = config_field(0.0, "ratio clip ε above 1 (0 = clip_low)")
    kl_beta: float = config_field(0.0, "Gaussian-mean KL weight to the reference; 0 builds no reference")
    kl_convention: str = config_field("flow_grpo", "flow_grpo (divide by 2g², no Δ) | exact (divide by 2g²(−Δ))")
    lr: float = config_field(1e-4, "AdamW learning rate")
    weight_decay: float = config_field(1e-4, "AdamW weight decay")
    adam_eps: float = config_field(1e-8, "AdamW eps")
    max_grad_norm: float = config_field(1.0, "clip the gradient norm (0 = off)")
    steps_per_rollout: int = config_field(1, "optimiser steps per rollout; the rollout is split into this many "
                                          "parts, each part's units accumulate into one step")
    inner_epochs: int = config_field(1, "passes over the rollout per iteration")
    ema_decay: float = config_field(0.0, "EMA decay of the trained weights (0 = no EMA); eval uses EMA weights")
    ema_every: int = config_field(1, "EMA update every n optimiser steps")
    skip_zero_advantage: bool = config_field(True, "leave rows with advantage exactly 0 out of the update when "
                                             "kl_beta = 0 (their gradient is exactly 0; same step, less compute)")
    max_consecutive_faults: int = config_field(5, "non-finite steps in a row before the run stops")
    seed: int = config_field(0, "seed of prompts, noise and unit selection")

    def validate(self) -> None:
        require_int(self, "iterations", 1)
        require_in(self, "units", UNIT_KINDS)
        require_range(self, "fraction", 0.0, 1.0, low_inclusive=False)
        require(self, "chunk_sizes", self.units != "chunks" or (len(self.chunk_sizes) > 0
                                                                and all(s >= 1 for s in self.chunk_sizes)),
                "must list positive chunk sizes for units=chunks", "e.g. --set {field}=2,3,5")
        require_in(self, "adv_std", ADV_STD_MODES)
        require_non_negative(self, "adv_eps")
        require_non_negative(self, "adv_clip")
        require_range(self, "clip_low", 0.0, 1.0, high_inclusive=False)
        require_non_negative(self, "clip_high")
        require_non_negative(self, "kl_beta")
        require_in(self, "kl_convention", KL_CONVENTIONS)
        require_positive(self, "lr")
        require_non_negative(self, "weight_decay")
        require_positive(self, "adam_eps")
        require_non_negative(self, "max_grad_norm")
        require_int(self, "steps_per_rollout", 1)
        require_int(self, "inner_epochs", 1)
        require_range(self, "ema_decay", 0.0, 1.0, high_inclusive=False)
        require_int(self, "ema_every", 1)
        require_int(self, "max_consecutive_faults", 0)
        require_int(self, "seed", 0)


@dataclass
class RunDirConfig(RunFolderConfig):
    dir: str = config_field("outputs/flow_grpo", "run folder: metrics.jsonl, checkpoints/, grids, curves")
    save_every: int = config_field(5, "checkpoint every n iterations (0 = only at the end)")
    eval_every: int = config_field(10, "evaluate every n iterations (0 = off)")
    eval_per_tag: int = config_field(2, "shapes eval prompts per GenEval tag (prompt files: 6×this prompts)")
    eval_steps: int = config_field(20, "ODE steps for evaluation and grids")
    eval_seed: int = config_field(1234, "noise seed of the evaluation and the grids, the same for every "
                                  "train.seed, so that the seeds of one setting are scored on the same images")
    eval_tags: list[str] = config_field(default_factory=list, help="shapes tags evaluated (empty = prompts.tags); "
                                        "all six gives the full GenEval-style score, out of domain for tags not "
                                        "trained on")
    eval_guidance: float = config_field(0.0, "CFG for evaluation and grids (0 = sample.guidance_scale)")
    eval_hybrid_steps: int = config_field(0, "hybrid inference (GCPO, MixGRPO): the first k of run.eval_steps with "
                                          "the trained model, the rest with the base model; reported as "
                                          "eval_hybrid/... beside eval/... and grid samples_after_hybrid.png "
                                          "(0 = off)")
    grids: bool = config_field(True, "write samples_before.png / samples_after.png and reward_curve.png")

    def validate(self) -> None:
        super().validate()
        require_int(self, "eval_every", 0)
        require_int(self, "eval_per_tag", 1)
        require_int(self, "eval_steps", 1)
        require_int(self, "eval_seed", 0)
        _require_tags(self, "eval_tags")
        require(self, "eval_guidance", self.eval_guidance == 0 or self.eval_guidance >= 1, "must be 0 or >= 1",
                "set {field}=0 to reuse sample.guidance_scale")
        require_int(self, "eval_hybrid_steps", 0)
        require(self, "eval_hybrid_steps", self.eval_hybrid_steps <= self.eval_steps,
                f"is larger than run.eval_steps={self.eval_steps}",
                "set {field} to k with 0 < k <= run.eval_steps (GCPO: 30 of 50), or 0 for no hybrid evaluation")


@dataclass
class RunConfig(Config):
    """Flow-matching GRPO: prompts → grouped rollouts → rewards → advantages → trained units → clipped loss (+KL).

    Subclass it to add sections (``@dataclass class GCPOConfig(RunConfig): chunk: ChunkConfig = config_field(...)``);
    :func:`shared.flow_grpo.train.train` uses whatever instance it is given. ``train.units = "custom"`` skips the
    fraction / chunk checks: the selector passed to ``train`` decides the units.
    """

    model: ModelConfig = config_field(default_factory=ModelConfig, help="the pipeline")
    lora: LoraConfig = config_field(default_factory=LoraConfig, help="LoRA (rank 0 = full fine-tune)")
    prompts: PromptConfig = config_field(default_factory=PromptConfig, help="where prompts come from")
    reward: RewardConfig = config_field(default_factory=RewardConfig, help="what is optimised")
    sample: SampleConfig = config_field(default_factory=SampleConfig, help="rollouts")
    train: TrainConfig = config_field(default_factory=TrainConfig, help="units, advantages, loss, optimiser")
    run: RunDirConfig = config_field(default_factory=RunDirConfig, help="outputs, checkpoints, evaluation")

    def validate(self) -> None:
        s, t = self.sample, self.train
        require(self, "sample.micro_batch_size", s.micro_batch_size == 0 or s.micro_batch_size <= s.group_size
                * self.prompts.per_iteration, "is larger than the whole rollout batch",
                "set {field}=0 or at most prompts.per_iteration × sample.group_size")
        m = len(s.sde_steps)
        if m:
            require(self, "sample.sde_steps", t.units == "custom" or sorted(s.sde_steps) == list(range(m)),
                    f"must be the first m transitions 0, …, m−1 for train.units={t.units}",
                    "e.g. --set {field}=0,1,2 (a high-noise window; the rest is ODE), or leave it empty")
        if t.units == "in_order":
            require(self, "train.fraction", int(s.num_steps * t.fraction) >= 1, "selects no step",
                    f"raise {{field}} to at least 1/{s.num_steps}")
            require(self, "train.fraction", not m or int(s.num_steps * t.fraction) <= m,
                    f"trains the first {int(s.num_steps * t.fraction)} steps, but only {m} are stochastic "
                    "(sample.sde_steps)", f"set {{field}} to at most {m}/{s.num_steps}, or widen sample.sde_steps")
        elif t.units == "random":
            n = s.num_steps - 1 if t.drop_last else s.num_steps
            require(self, "train.fraction", n >= 1 and int(n * t.fraction) >= 1, "selects no step",
                    "raise {field} (or sample.num_steps, or set train.drop_last=false)")
        elif t.units == "chunks":
            n = m or s.num_steps
            require(self, "train.chunk_sizes", sum(t.chunk_sizes) == n,
                    f"sums to {sum(t.chunk_sizes)}, not {n} (the {'stochastic steps' if m else 'sample.num_steps'})",
                    f"make the sizes sum to {n}")
        require(self, "sample.same_noise_per_group", not (s.same_noise_per_group and self.prompts.spread_groups),
                "needs whole groups per process", "also set prompts.spread_groups=false")


def extend_run_config(cls: type, base: RunConfig, **sections) -> Any:
    """``base`` (a RunConfig, e.g. a shared preset) as the subclass ``cls`` of a package: every section of ``base``
    is carried over — re-typed to ``cls``'s own section subclass where it declares one (so package defaults such as
    GCPO's ``train.units`` field help stay attached) — and ``sections`` (name → section, or name → dict of field
    changes for a carried-over section) replace or edit them.

        cfg = extend_run_config(GCPOConfig, get_preset(RunConfig, "shapes"), chunk=ChunkConfig(...),
                                train={"units": "custom"}, run={"dir": "outputs/chunk_grpo_shapes"})
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not hasattr(base, f.name):
            continue
        value, target = getattr(base, f.name), hints.get(f.name)
        if isinstance(target, type) and dataclasses.is_dataclass(target) and type(value) is not target:
            value = target(**{g.name: getattr(value, g.name) for g in dataclasses.fields(value)})
        values[f.name] = value
    for name, section in sections.items():
        values[name] = dataclasses.replace(values[name], **section) if isinstance(section, dict) else section
    return cls(**values)


# --------------------------------------------------------------------------------------------------------- presets


@register_preset(RunConfig)
def flow_grpo() -> RunConfig:
    """Flow-GRPO on SD3.5-M (flow_grpo `config/grpo.py`, PickScore): set model.path, prompts.file, reward.kwargs."""
    return RunConfig(
        model=ModelConfig(path="", mixed_precision="fp16", gradient_checkpointing=True),
        lora=LoraConfig(rank=32, alpha=64.0, targets=list(SD3_ATTN)),
        prompts=PromptConfig(source="file", per_iteration=48),
        reward=RewardConfig(names=["pickscore"]),
        sample=SampleConfig(num_steps=10, kind="flow_grpo", noise_level=0.7, guidance_scale=4.5, resolution=512,
                            group_size=24, micro_batch_size=8),
        train=TrainConfig(iterations=1000, units="in_order", fraction=0.99, adv_std="batch", adv_eps=1e-4,
                          adv_clip=5.0, clip_low=1e-4, kl_beta=0.01, kl_convention="flow_grpo", lr=3e-4,
                          weight_decay=1e-4, max_grad_norm=1.0, steps_per_rollout=2, ema_decay=0.9, ema_every=8),
        run=RunDirConfig(dir="outputs/flow_grpo_sd35", save_every=20, eval_every=50, eval_steps=40),
    )


@register_preset(RunConfig)
def dance_grpo() -> RunConfig:
    """DanceGRPO on FLUX.1-dev (`finetune_flux_grpo.sh`, HPSv2.1): set model.path, prompts.file, reward.kwargs."""
    return RunConfig(
        model=ModelConfig(path="", mixed_precision="bf16", gradient_checkpointing=True),
        lora=LoraConfig(rank=0),
        prompts=PromptConfig(source="file", per_iteration=8, spread_groups=False),
        reward=RewardConfig(names=["hpsv2"]),
        sample=SampleConfig(num_steps=16, kind="dance", noise_level=0.3, schedule="dance", shift=3.0,
                            guidance_scale=1.0, resolution=720, group_size=12, micro_batch_size=1,
                            same_noise_per_group=True),
        train=TrainConfig(iterations=300, units="random", fraction=0.6, drop_last=True, adv_std="group",
                          adv_eps=1e-8, adv_unbiased=True, adv_clip=5.0, clip_low=1e-4, kl_beta=0.0, lr=1e-5,
                          weight_decay=1e-4, max_grad_norm=1.0, steps_per_rollout=1, ema_decay=0.995),
        run=RunDirConfig(dir="outputs/dance_grpo_flux", save_every=20, eval_every=50, eval_steps=28),
    )


SD3_ROUTING = ["attn.to_q", "attn.to_k", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
"""The attention weights that route text to image (queries, keys, the text stream's projections): on the tiny shapes
base their GRPO gradients agree between independent batches far more than the pixel-facing ones (tools/grad_snr.py)."""


@register_preset(RunConfig)
def shapes() -> RunConfig:
    """The tiny shapes-world base on CPU, about 15 minutes on one core (our setting; docs/results/shapes_rl.md).

    Rollouts: 8 flow_grpo SDE steps (a = 0.7) of which only the first 4, high-noise ones are stochastic and trained
    (the rest ODE: the reward is credited to the transitions that decide layout, count and colour), one initial
    noise per group of 8, CFG 4. Reward: the shapes verifier with partial credit, on single-object, colour and
    counting prompts. **A large batch and few steps**: 64 prompts × G 8 = 512 samples per iteration, 12 iterations
    (one 64-sample gradient is mostly sampling noise; one step along a 512-sample gradient raises the score,
    tools/grad_snr.py --step-lrs). LoRA r16 on the text-to-image routing weights (``SD3_ROUTING``), AdamW 3e-3,
    batch-std advantages, one optimiser step per rollout, no EMA. Evaluation every 4 iterations on 32 fixed prompts
    per category, 20 ODE steps.
    """
    return RunConfig(
        model=ModelConfig(path="assets/shapes_base"),
        lora=LoraConfig(rank=16, alpha=16.0, targets=list(SD3_ROUTING)),
        prompts=PromptConfig(source="shapes", tags=["single_object", "colors", "counting"], per_iteration=64,
                             spread_groups=False),
        reward=RewardConfig(names=["shapes"], kwargs={"shapes": {"partial_credit": True}}),
        sample=SampleConfig(num_steps=8, kind="flow_grpo", noise_level=0.7, guidance_scale=4.0, group_size=8,
                            micro_batch_size=64, same_noise_per_group=True, sde_steps=[0, 1, 2, 3]),
        train=TrainConfig(iterations=12, units="in_order", fraction=0.5, adv_std="batch", lr=3e-3, kl_beta=0.0,
                          steps_per_rollout=1, ema_decay=0.0),
        run=RunDirConfig(dir="outputs/flow_grpo_shapes", save_every=4, eval_every=4, eval_per_tag=32),
    )
