"""The slas run config: the shared flow-GRPO trainer's sections plus ``advantage`` (which advantage function).

    cfg = load_config(SLASConfig, preset="shapes", overrides=["advantage.mode=slas", "advantage.gamma=1.0"])

``advantage.mode``:

* ``dance`` — DanceGRPO's advantage, the baseline: ``train.adv_std`` / ``adv_eps`` / ``adv_unbiased`` /
  ``adv_clip`` of the shared trainer (the presets set DanceGRPO's per-group unbiased std + 1e-8, clip ±5).
* ``slas``  — Super-Linear Advantage Shaping (:func:`slas.shaping.slas_advantages`) with the ``advantage.*``
  options below; ``train.adv_*`` are then unused. Every option but γ is our reconstruction (slas.md §4).

Presets (each names the weights it needs; no path or hub id is built in):

* ``shapes``           the tiny shapes-world base (assets/shapes_base) on CPU, ≈ 6 min: shared's ``shapes`` preset
  with the high-noise SDE window that learns on CPU (see the README), DanceGRPO-style per-group advantages as
  the baseline, and the full six-category GenEval-style score evaluated beside a narrower training set (the
  reward-hacking guard).
* ``flux-dev-hpsv21``  DanceGRPO's FLUX.1-dev HPS-v2.1 run (shared ``dance_grpo`` preset). Needs ``model.path``,
  ``prompts.file`` (HPD-v2 train prompts) and
  ``--set reward.kwargs='{"hpsv2": {"checkpoint": ".../HPS_v2.1_compressed.pt"}}'``.
* ``sd14-hpsv21``      DanceGRPO's SD1.4 HPS-v2.1 run (``fastvideo/config_sd/dgx.py:hpsv2``): DDIM η 1, 50 steps,
  CFG 5 in sampling and training, G = 16, full fine-tune lr 1e-5, bf16. Needs ``model.path`` (a local SD1.4
  pipeline folder), ``prompts.file`` and the HPS-v2.1 checkpoint as above.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.flow_grpo.config import (
    extend_run_config,
    LoraConfig,
    ModelConfig,
    PromptConfig,
    RewardConfig,
    RunConfig,
    RunDirConfig,
    SampleConfig,
    TrainConfig,
)
from shared.training import (
    Config,
    config_field,
    get_preset,
    register_preset,
    require,
    require_in,
    require_int,
    require_non_negative,
)

from slas.shaping import GAMMA_SCHEDULES, ORDERS, RECENTRE_MODES, SIGMA_B_OF, STATS_SCOPES, ShapingConfig

__all__ = ["ADVANTAGE_MODES", "AdvantageConfig", "SLASConfig"]

ADVANTAGE_MODES = ("dance", "slas")
UNET_ATTN = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class AdvantageConfig(Config):
    """Which advantage the trainer uses; the SLAS options (slas.md §4 table; all but γ's role are ours)."""

    mode: str = config_field("slas", "dance (DanceGRPO: train.adv_* per-group std, the baseline) | slas "
                             "(centre per group, batch std, sign(Â)·|Â|^(1+γ))")
    gamma: float = config_field(0.5, "γ ≥ 0 of Ã = sign(Â)·|Â|^(1+γ); 0 = Flow-GRPO's batch-std advantage "
                                "exactly (the paper's value is unknown; 0.5 is ours)")
    gamma_schedule: str = config_field("constant", "constant | linear | cosine from gamma to gamma_end over "
                                       "train.iterations [ours]")
    gamma_end: float = config_field(0.0, "final γ of a linear / cosine schedule (unused with constant)")
    order: str = config_field("normalise_then_power", "normalise_then_power (Â = Δr/σ_B, then the power) | "
                              "power_then_normalise (power of Δr, then divide by the batch std of the result) [ours]")
    sigma_b_of: str = config_field("raw_rewards", "σ_B from raw_rewards (Flow-GRPO; γ = 0 equality) | centred "
                                   "(the std of Δr) [ours]")
    recentre: str = config_field("none", "none | group | batch: subtract the mean of Ã after the power [ours]")
    clip: float = config_field(5.0, "clip Ã to ±clip after the power (0 = off; the image anchors use 5)")
    eps: float = config_field(1e-4, "σ_B denominator eps (Flow-GRPO 1e-4)")
    ddof: int = config_field(0, "std ddof: 0 population (Flow-GRPO) | 1 unbiased (DanceGRPO)")
    stats_scope: str = config_field("global", "global (statistics over all processes, as the abstract's "
                                    "'batch-level') | per_rank (DanceGRPO computes per rank) [ours]")

    def validate(self) -> None:
        require_in(self, "mode", ADVANTAGE_MODES)
        require(self, "gamma", isinstance(self.gamma, int | float) and self.gamma >= 0, "must be >= 0",
                "set {field}=0 (linear, batch std) or e.g. 0.5 / 1.0")
        require_in(self, "gamma_schedule", GAMMA_SCHEDULES)
        require_non_negative(self, "gamma_end")
        require_in(self, "order", ORDERS)
        require_in(self, "sigma_b_of", SIGMA_B_OF)
        require_in(self, "recentre", RECENTRE_MODES)
        require_non_negative(self, "clip")
        require_non_negative(self, "eps")
        require_int(self, "ddof", 0)
        require(self, "ddof", self.ddof in (0, 1), "must be 0 or 1", "set {field}=0 (population) or 1 (unbiased)")
        require_in(self, "stats_scope", STATS_SCOPES)

    def shaping(self) -> ShapingConfig:
        """The :class:`~slas.shaping.ShapingConfig` these options describe."""
        return ShapingConfig(gamma=float(self.gamma), gamma_schedule=self.gamma_schedule,
                             gamma_end=None if self.gamma_schedule == "constant" else float(self.gamma_end),
                             order=self.order, sigma_b_of=self.sigma_b_of, recentre=self.recentre,
                             clip=float(self.clip) or None, eps=float(self.eps), ddof=int(self.ddof),
                             stats_scope=self.stats_scope)


@dataclass
class SLASRunDirConfig(RunDirConfig):
    dir: str = config_field("outputs/slas", "run folder: metrics.jsonl, checkpoints/, grids, curves")


@dataclass
class SLASConfig(RunConfig):
    """SLAS on the shared flow-GRPO trainer: grouped rollouts → rewards → shaped advantages → clipped loss → step."""

    run: SLASRunDirConfig = config_field(default_factory=SLASRunDirConfig, help="outputs, checkpoints, evaluation")
    advantage: AdvantageConfig = config_field(default_factory=AdvantageConfig,
                                              help="dance (baseline) or slas advantages (slas.md §4)")


# --------------------------------------------------------------------------------------------------------- presets


def _from_run(base: RunConfig, run_dir: str, *, train: dict | None = None, run: dict | None = None,
              **advantage) -> SLASConfig:
    """A shared RunConfig preset as an SLASConfig with its own run dir, the given advantage options and the given
    ``train`` / ``run`` field changes."""
    return extend_run_config(SLASConfig, base, train=train or {}, run={"dir": run_dir, **(run or {})},
                             advantage=AdvantageConfig(**advantage))


@register_preset(SLASConfig, "shapes")
def shapes() -> SLASConfig:
    """Shared's ``shapes`` preset (512 samples per iteration, lr 3e-3, 12 iterations: ≈ 6 min on 2 CPU threads) with
    DanceGRPO's advantage conventions as the baseline (per-group unbiased std + 1e-8, clip 5, one initial noise per
    group): trains on single-object, colour and counting prompts and evaluates all six GenEval categories (three out
    of domain) every 4 iterations. Over 5 seeds the six-category gain on 1,536 prompts was +0.051 ± 0.022, positive
    on every seed; continuing to 24 iterations (``--set train.iterations=24`` on the same run folder) gave about 1.6
    times the gain on a 384-prompt evaluation (packages/slas/README.md). (With 64 samples per iteration the preset
    used half the lr, as SLAS γ = 0.5 collapsed at 3e-3; with 512, lr 1.5e-3 left the training reward flat, and 6e-3
    raised it less than 3e-3.)"""
    return _from_run(get_preset(RunConfig, "shapes"), "outputs/slas_shapes", mode="slas",
                     train={"adv_std": "group", "adv_unbiased": True, "adv_eps": 1e-8, "adv_clip": 5.0},
                     run={"eval_tags": ["single_object", "two_object", "counting", "colors", "position", "color_attr"],
                          "eval_every": 4, "eval_per_tag": 16})


@register_preset(SLASConfig, "flux-dev-hpsv21")
def flux_dev_hpsv21() -> SLASConfig:
    """DanceGRPO on FLUX.1-dev with HPS-v2.1 (``finetune_flux_grpo.sh``; shared ``dance_grpo`` preset), SLAS
    advantages by default (``--advantage dance`` for the baseline). 8 GPUs: ``accelerate launch --num_processes 8``."""
    return _from_run(get_preset(RunConfig, "dance_grpo"), "outputs/slas_flux_hpsv21", mode="slas")


@register_preset(SLASConfig, "sd14-hpsv21")
def sd14_hpsv21() -> SLASConfig:
    """DanceGRPO's SD1.4 HPS-v2.1 setting (``fastvideo/config_sd/dgx.py:hpsv2``; slas.md §6): DDIM η = 1, 50 steps,
    CFG 5 in sampling and training, 512 px, G = 16 with one initial noise per group, random step subsets
    (DDPO-style, all steps are candidates), per-group advantages, clip 1e-4, full fine-tune lr 1e-5, bf16."""
    base = RunConfig(
        model=ModelConfig(path="", mixed_precision="bf16", gradient_checkpointing=True),
        lora=LoraConfig(rank=0, targets=list(UNET_ATTN)),
        prompts=PromptConfig(source="file", per_iteration=8, spread_groups=False),
        reward=RewardConfig(names=["hpsv2"]),
        sample=SampleConfig(num_steps=50, kind="ddim", noise_level=1.0, guidance_scale=5.0, resolution=512,
                            group_size=16, micro_batch_size=4, same_noise_per_group=True),
        train=TrainConfig(iterations=300, units="random", fraction=0.6, drop_last=False, adv_std="group",
                          adv_eps=1e-8, adv_unbiased=True, adv_clip=5.0, clip_low=1e-4, kl_beta=0.0, lr=1e-5,
                          weight_decay=1e-4, max_grad_norm=1.0, steps_per_rollout=1),
        run=RunDirConfig(save_every=20, eval_every=50, eval_steps=50),
    )
    return _from_run(base, "outputs/slas_sd14_hpsv21", mode="slas")
