"""Mask-GRPO's config: one validated dataclass tree and three presets (mask_grpo.md §5–7).

    cfg = load_config(MaskGRPOConfig, preset="shapes", overrides=["train.lr=1e-4"])  # ConfigError names a bad field

Sections: ``model`` (backend and local folders), ``prompts`` and ``reward`` (shared with the flow trainer),
``sample`` (rollout sampler and group size), ``train`` (log-prob kind, trained iterations, advantages, clipped
loss, KL, optimiser), ``filter`` (the vanishing-sample filter) and ``run`` (outputs, checkpoints, evaluation).

Presets:

* ``shapes``      the committed shapes-world masked base (assets/shapes_masked_base) on CPU, minutes (ours).
* ``showo-512``   the paper's setting on Show-o 512×512 (App. C + released config): T = 50 with the unmasking
                  reduction to 20 in training, CFG 0 in rollouts and 5 (w = 6 here) at evaluation, G = 6, 16 prompts
                  per iteration, p_θ1, ε 0.1/0.2, β = 0, AdamW (0.9, 0.95) wd 0.02 lr 3e-6, fp16, the filter.
                  Needs model.path (show-o-512x512), model.vq_path (magvitv2), model.tokenizer_path (phi-1_5),
                  prompts.file and a reward with its weights (the paper: CLIP ViT-H-14).
* ``amused-512``  the same recipe on diffusers' aMUSEd-512 (our transfer: its scheduler's temperature form, 12
                  sampling steps as the pipeline's default, guidance 10 at evaluation). Needs model.path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.flow_grpo.config import PromptConfig, RewardConfig
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

from mask_grpo.logprobs import KINDS
from mask_grpo.schedules import SCHEDULES, TEMPERATURE_FORMS

__all__ = ["BACKENDS", "FilterConfig", "MaskGRPOConfig", "ModelConfig", "RunDirConfig", "SampleConfig",
           "TrainConfig"]

BACKENDS = ("shapes", "amused", "showo")
STEP_WINDOWS = ("all", "first", "last")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class ModelConfig(Config):
    backend: str = config_field("shapes", "shapes (the shipped masked base) | amused (diffusers aMUSEd folder) | "
                                "showo (Show-o checkpoint folder + MAGVIT-v2 folder)")
    path: str = config_field("assets/shapes_masked_base", "local model folder; no hub ids")
    vq_path: str = config_field("", "showo: the MAGVIT-v2 tokenizer folder")
    tokenizer_path: str = config_field("", "showo: the Phi-1.5 text tokenizer folder (empty = model.path)")
    num_vq_tokens: int = config_field(0, "showo: image tokens per sample, overriding config.json (1024 for "
                                      "show-o-512x512, whose config.json may say 256); 0 = config.json")
    mixed_precision: str = config_field("no", "autocast dtype on GPU: no | fp16 | bf16 (log-prob math stays fp32)")
    cpu: bool = config_field(False, "force CPU even when a GPU is present")

    def validate(self) -> None:
        from shared.demo import resolve_model

        require_in(self, "backend", BACKENDS)
        try:
            found = bool(self.path) and resolve_model(self.path).is_dir()
        except FileNotFoundError:
            found = False
        require(self, "path", found, "is not an existing folder",
                "point {field} at a local model folder, e.g. --set {field}=assets/shapes_masked_base")
        require(self, "vq_path", self.backend != "showo" or (bool(self.vq_path) and Path(self.vq_path).is_dir()),
                "must be the MAGVIT-v2 folder for model.backend=showo", "set {field}=<folder with magvitv2 weights>")
        require_int(self, "num_vq_tokens", 0)
        require_in(self, "mixed_precision", PRECISIONS)


@dataclass
class SampleConfig(Config):
    steps: int = config_field(8, "unmasking iterations T in rollouts (the unmasking reduction: fewer than "
                              "run.eval_steps)")
    schedule: str = config_field("cosine", "mask schedule: cosine | linear | pow | sigmoid")
    exponent: float = config_field(2.0, "schedule=pow: gamma = 1 - r^exponent")
    temperature: str = config_field("showo", "choice-temperature form: showo (compounding) | maskgit | amused")
    tau0: float = config_field(1.0, "initial choice temperature (showo, maskgit)")
    amused_range: list[float] = config_field(default_factory=lambda: [2.0, 0.0],
                                             help="temperature=amused: linspace(start, end, T)")
    cfg_scale: float = config_field(1.0, "CFG in rollouts and training, l_u + w(l_c - l_u); 1 = off (the paper)")
    group_size: int = config_field(8, "G samples per prompt")
    micro_batch_size: int = config_field(0, "samples per rollout / training forward; 0 = a whole part")

    def validate(self) -> None:
        require_int(self, "steps", 1)
        require_in(self, "schedule", SCHEDULES)
        require_positive(self, "exponent")
        require_in(self, "temperature", TEMPERATURE_FORMS)
        require_non_negative(self, "tau0")
        require(self, "amused_range", len(self.amused_range) == 2, "must hold two numbers (start, end)",
                "e.g. --set {field}=2,0")
        require_range(self, "cfg_scale", 0.0, None)
        require_int(self, "group_size", 2)
        require_int(self, "micro_batch_size", 0)


@dataclass
class TrainConfig(Config):
    iterations: int = config_field(40, "rollout → update iterations")
    logprob: str = config_field("p1", "transition probability: p1 (Eq. 14, the paper's) | p2 (Eq. 15) | ar "
                                "(AR-style, all masked positions)")
    step_window: str = config_field("all", "computational reduction: train on all iterations, or the first / "
                                    "last train.step_count of them")
    step_count: int = config_field(0, "iterations trained with step_window first/last")
    steps_per_forward: int = config_field(0, "trained iterations replayed per forward and backward (0 = all in "
                                          "one batched forward; 1 = the authors' one pass per iteration, least memory)")
    adv_std: str = config_field("group", "advantage scale: group (the paper) | batch | none")
    adv_eps: float = config_field(1e-4, "advantage denominator eps (1e-4 CLIP, 1e-5 ImageReward in the paper)")
    adv_clip: float = config_field(0.0, "clip advantages to ±this (0 = off)")
    clip_low: float = config_field(0.1, "ratio clip ε below 1")
    clip_high: float = config_field(0.2, "ratio clip ε above 1 (higher: exploration)")
    kl_beta: float = config_field(0.0, "KL weight to a frozen copy of the initial model; 0 builds no copy")
    kl_kind: str = config_field("k3", "KL estimator: k1 | k2 | k3")
    lr: float = config_field(3e-6, "AdamW learning rate")
    lr_schedule: str = config_field("constant", "constant | cosine (to 0 over train.iterations × optimiser steps "
                                    "per iteration; the paper's)")
    warmup_steps: int = config_field(0, "linear warm-up optimiser steps (the paper: 1000)")
    betas: list[float] = config_field(default_factory=lambda: [0.9, 0.95], help="AdamW betas")
    weight_decay: float = config_field(0.02, "AdamW weight decay (none on biases and norms)")
    max_grad_norm: float = config_field(1.0, "clip the gradient norm (0 = off)")
    updates_per_rollout: int = config_field(1, "passes over the rollout (> 1: later passes are off-policy and the "
                                            "clip acts)")
    steps_per_rollout: int = config_field(1, "optimiser steps per pass; the rollout is split into this many parts")
    ema_decay: float = config_field(0.0, "EMA of the trained weights for evaluation (0 = off)")
    max_consecutive_faults: int = config_field(5, "non-finite steps in a row before the run stops")
    seed: int = config_field(0, "seed of prompts, sampling and evaluation")

    def validate(self) -> None:
        require_int(self, "iterations", 1)
        require_in(self, "logprob", KINDS)
        require_in(self, "step_window", STEP_WINDOWS)
        require_int(self, "step_count", 0)
        require(self, "step_count", self.step_window == "all" or self.step_count >= 1,
                f"must be >= 1 with step_window={self.step_window}", "e.g. --set {field}=4")
        require_int(self, "steps_per_forward", 0)
        require_in(self, "adv_std", ("group", "batch", "none"))
        require_non_negative(self, "adv_eps")
        require_non_negative(self, "adv_clip")
        require_range(self, "clip_low", 0.0, 1.0, high_inclusive=False)
        require_non_negative(self, "clip_high")
        require_non_negative(self, "kl_beta")
        require_in(self, "kl_kind", ("k1", "k2", "k3"))
        require_positive(self, "lr")
        require_in(self, "lr_schedule", ("constant", "cosine"))
        require_int(self, "warmup_steps", 0)
        require(self, "betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                "must be two numbers in [0, 1)", "e.g. --set {field}=0.9,0.95")
        require_non_negative(self, "weight_decay")
        require_non_negative(self, "max_grad_norm")
        require_int(self, "updates_per_rollout", 1)
        require_int(self, "steps_per_rollout", 1)
        require_range(self, "ema_decay", 0.0, 1.0, high_inclusive=False)
        require_int(self, "max_consecutive_faults", 0)
        require_int(self, "seed", 0)


@dataclass
class FilterConfig(Config):
    enabled: bool = config_field(True, "resample a group whose reward std is below a percentile of past groups")
    percentile: float = config_field(10.0, "the percentile of the std history (the paper: 10)")
    min_history: int = config_field(16, "groups seen before the filter acts")
    max_tries: int = config_field(2, "resamples per group at most (the last draw is kept)")
    history: int = config_field(2000, "most recent group stds kept")

    def validate(self) -> None:
        require_range(self, "percentile", 0.0, 100.0)
        require_int(self, "min_history", 1)
        require_int(self, "max_tries", 1)
        require_int(self, "history", 1)


@dataclass
class RunDirConfig(RunFolderConfig):
    dir: str = config_field("outputs/mask_grpo", "run folder: metrics.jsonl, checkpoints/, grids, curves")
    save_every: int = config_field(10, "checkpoint every n iterations (0 = only at the end)")
    eval_every: int = config_field(10, "evaluate every n iterations (0 = off)")
    eval_per_tag: int = config_field(16, "shapes eval prompts per GenEval tag (prompt files: 6×this prompts)")
    eval_tags: list[str] = config_field(default_factory=list, help="shapes tags evaluated (empty = prompts.tags)")
    eval_samples: int = config_field(2, "samples per eval prompt (masked sampling is stochastic; fixed seed)")
    eval_seed: int = config_field(1234, "noise seed of the evaluation and the grids, the same for every "
                                  "train.seed, so that the seeds of one setting are scored on the same images")
    eval_steps: int = config_field(0, "unmasking iterations at evaluation (0 = sample.steps)")
    eval_cfg_scale: float = config_field(0.0, "CFG at evaluation (0 = sample.cfg_scale; Show-o's 5 is 6 here)")
    grids: bool = config_field(True, "write samples_before.png / samples_after.png and reward_curve.png")

    def validate(self) -> None:
        from shared.shapes import TAGS

        super().validate()
        require_int(self, "eval_every", 0)
        require_int(self, "eval_per_tag", 1)
        bad = [t for t in self.eval_tags if t not in TAGS]
        require(self, "eval_tags", not bad, f"has unknown tags {bad}", f"use a subset of {', '.join(TAGS)}")
        require_int(self, "eval_samples", 1)
        require_int(self, "eval_seed", 0)
        require_int(self, "eval_steps", 0)
        require_non_negative(self, "eval_cfg_scale")


@dataclass
class MaskGRPOConfig(Config):
    """Mask-GRPO: prompts → grouped unmasking rollouts → rewards (vanishing-sample filter) → group advantages →
    clipped loss on the transition log-probs (p_θ1 by default) of the trained iterations (+ KL) → AdamW."""

    model: ModelConfig = config_field(default_factory=ModelConfig, help="the masked model")
    prompts: PromptConfig = config_field(default_factory=lambda: PromptConfig(spread_groups=False),
                                         help="where prompts come from (whole groups per process)")
    reward: RewardConfig = config_field(default_factory=RewardConfig, help="what is optimised")
    sample: SampleConfig = config_field(default_factory=SampleConfig, help="rollouts")
    train: TrainConfig = config_field(default_factory=TrainConfig, help="log-probs, advantages, loss, optimiser")
    filter: FilterConfig = config_field(default_factory=FilterConfig, help="vanishing-sample filter")
    run: RunDirConfig = config_field(default_factory=RunDirConfig, help="outputs, checkpoints, evaluation")

    def validate(self) -> None:
        require(self, "prompts.spread_groups", not self.prompts.spread_groups,
                "must be false: a group stays on one process (the filter resamples whole groups)",
                "set {field}=false")
        t = self.train
        if t.step_window != "all":
            require(self, "train.step_count", t.step_count <= self.sample.steps,
                    f"exceeds sample.steps={self.sample.steps}", "set it to at most sample.steps")

    def trained_steps(self) -> list[int]:
        """The iterations whose transitions are trained (the computational reduction)."""
        t, n = self.train, self.sample.steps
        if t.step_window == "first":
            return list(range(t.step_count))
        if t.step_window == "last":
            return list(range(n - t.step_count, n))
        return list(range(n))


# --------------------------------------------------------------------------------------------------------- presets


@register_preset(MaskGRPOConfig)
def shapes() -> MaskGRPOConfig:
    """The shipped shapes-world masked base on CPU in a few minutes (our setting).

    Rollouts: 8 unmasking iterations with aMUSEd's temperature form (2 → 0) and CFG 3 in sampling and training (the
    base's best setting; the paper samples without CFG to save memory), G = 8, 8 prompts of single-object, colour
    and counting categories. Training: p_θ2 (Eq. 15), lr 1e-4, the filter, β = 0. p_θ2 rather than the paper's p_θ1:
    on this base one optimiser step along a 64-sample p_θ2 gradient raises the score about five times more than
    along p_θ1's (docs/results/mask_grpo_shapes.md), and the authors' released code trains p_θ2 in effect (its bool
    threshold, card §8). At lr 1e-3 every variant collapses; at 3e-5 nothing moves in 30 iterations."""
    return MaskGRPOConfig(
        model=ModelConfig(backend="shapes", path="assets/shapes_masked_base"),
        prompts=PromptConfig(source="shapes", tags=["single_object", "colors", "counting"], per_iteration=8,
                             spread_groups=False),
        reward=RewardConfig(names=["shapes"], kwargs={"shapes": {"partial_credit": True}}),
        sample=SampleConfig(steps=8, temperature="amused", amused_range=[2.0, 0.0], cfg_scale=3.0, group_size=8),
        train=TrainConfig(iterations=30, logprob="p2", lr=1e-4, weight_decay=0.0),
        run=RunDirConfig(dir="outputs/mask_grpo_shapes", eval_every=10, eval_per_tag=32, eval_samples=2),
    )


@register_preset(MaskGRPOConfig, "showo-512")
def showo_512() -> MaskGRPOConfig:
    """Show-o 512×512 with the paper's hyperparameters (mask_grpo.md §7)."""
    return MaskGRPOConfig(
        model=ModelConfig(backend="showo", path="", num_vq_tokens=1024, mixed_precision="fp16"),
        prompts=PromptConfig(source="file", per_iteration=16, spread_groups=False),
        reward=RewardConfig(names=["clip_score"]),
        sample=SampleConfig(steps=20, temperature="showo", tau0=1.0, cfg_scale=1.0, group_size=6, micro_batch_size=1),
        train=TrainConfig(iterations=16000, logprob="p1", adv_std="group", adv_eps=1e-4, clip_low=0.1, clip_high=0.2,
                          kl_beta=0.0, lr=3e-6, lr_schedule="cosine", warmup_steps=1000, betas=[0.9, 0.95],
                          weight_decay=0.02, steps_per_forward=1),
        run=RunDirConfig(dir="outputs/mask_grpo_showo512", save_every=150, eval_every=60, eval_steps=50,
                         eval_cfg_scale=6.0),
    )


@register_preset(MaskGRPOConfig, "amused-512")
def amused_512() -> MaskGRPOConfig:
    """aMUSEd-512 with the paper's recipe (our transfer; mask_grpo.md §9 for the sampler)."""
    return MaskGRPOConfig(
        model=ModelConfig(backend="amused", path="", mixed_precision="fp16"),
        prompts=PromptConfig(source="file", per_iteration=16, spread_groups=False),
        reward=RewardConfig(names=["clip_score"]),
        sample=SampleConfig(steps=12, temperature="amused", amused_range=[2.0, 0.0], cfg_scale=1.0, group_size=6,
                            micro_batch_size=2),
        train=TrainConfig(iterations=16000, logprob="p1", adv_std="group", clip_low=0.1, clip_high=0.2, kl_beta=0.0,
                          lr=3e-6, lr_schedule="cosine", warmup_steps=1000, betas=[0.9, 0.95], weight_decay=0.02),
        run=RunDirConfig(dir="outputs/mask_grpo_amused512", save_every=150, eval_every=60, eval_steps=12,
                         eval_cfg_scale=10.0),
    )
