"""GCPO's config: the shared flow-GRPO RunConfig plus a ``chunk`` section, and three presets.

    cfg = load_config(GCPOConfig, preset="shapes", overrides=["chunk.chunking=adaptive"])   # ConfigError names a field

``chunk`` (:class:`ChunkConfig`) says how the trained transitions are cut into chunks and which chunks each sample
trains (chunk_grpo.md §5–6); everything else (rollout SDE, rewards, advantages, clipped loss, optimiser, evaluation)
is the shared trainer's (:mod:`shared.flow_grpo.config`). ``train.units`` must be ``custom``: the chunk selector
(:class:`chunk_grpo.selector.ChunkSelector`) supplies the units.

Presets (each names the weights it needs; no path or hub id is built in):

* ``shapes``          the tiny shapes-world base (assets/shapes_base) on CPU, shared's ``shapes`` preset (8 flow_grpo
  SDE steps of which the first 4 are stochastic, graded partial credit, LoRA on the routing weights) with the 4
  stochastic transitions in fixed chunks [2, 2], 36 iterations of 512 samples. About 40 minutes on one core.
* ``flux-dev-hpsv3``  GCPO's released run (chunk_grpo.md §7, Table 8, ``finetune_hpsv3_chunk.sh``) on FLUX.1-dev.
  Needs ``model.path`` (local FLUX.1-dev folder), ``prompts.file`` (HPDv2.1 train prompts) and the reward weights.
  HPSv3 is **not** registered in :mod:`shared.rewards`, so the preset uses ``hpsv2`` (HPS v2.1, the closest
  registered preference model): ``--set reward.kwargs='{"hpsv2": {"checkpoint": ".../HPS_v2.1_compressed.pt"}}'``
  (open_clip ViT-H-14 architecture, weights from that file only). Switch to ``reward.names=hpsv3`` once registered.
* ``sd35m``           Flow-GRPO's SD3.5-M PickScore settings (shared ``flow_grpo`` preset) with chunks [2, 3, 4] over
  the first 9 of 10 transitions. Needs ``model.path``, ``prompts.file`` and
  ``--set reward.kwargs='{"pickscore": {"model_dir": ".../PickScore_v1", "processor_dir": ".../CLIP-H processor"}}'``.
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
    require_int,
    Config,
    config_field,
    get_preset,
    register_preset,
    require,
    require_in,
    require_range,
)

from chunk_grpo.l1rel import SCOPES
from chunk_grpo.sampling import WEIGHT_METHODS

__all__ = ["CHUNKINGS", "PAPER_SIZES", "SAMPLINGS", "ChunkConfig", "GCPOConfig", "GCPORunDirConfig",
           "GCPOSampleConfig", "GCPOTrainConfig"]

CHUNKINGS = ("fixed", "uniform", "adaptive")
SAMPLINGS = ("all", "uniform", "weighted")
PAPER_SIZES = (2, 3, 4, 7)
"""GCPO's released ``--new_chunk_list``: 16 transitions, high noise first. [authors' code]"""



@dataclass
class ChunkConfig(Config):
    """How the trained transitions are cut into chunks, and which chunks each sample trains."""

    chunking: str = config_field("fixed", "fixed (chunk.sizes) | uniform (chunk.size) | adaptive (our L1rel rule: "
                                 "chunk.max_chunk, min_chunk, max_order, adaptive_scope; see the README)")
    sizes: list[int] = config_field(default_factory=lambda: list(PAPER_SIZES),
                                    help="chunking=fixed: chunk sizes, high noise first, summing to the trained "
                                    "transitions (sample.num_steps, minus 1 with chunk.drop_last); GCPO: 2,3,4,7")
    size: int = config_field(4, "chunking=uniform: chunk size; a last, shorter chunk holds the remainder")
    max_chunk: int = config_field(4, "adaptive: a segment of at most this many transitions is not split further")
    min_chunk: int = config_field(1, "adaptive: chunks smaller than this are merged into their smaller neighbour")
    max_order: int = config_field(3, "adaptive: highest difference order used for cuts; beyond it midpoint cuts")
    adaptive_scope: str = config_field("group", "adaptive: the L1rel curve chunked: group (mean over a prompt "
                                       "group: one chunking per group) | batch (one per process batch) | "
                                       "trajectory (one per sample)")
    sampling: str = config_field("all", "chunks trained per sample: all | uniform (max(1, ⌊K·f⌋) at random) | "
                                 "weighted (max(1, ⌊K·f⌋) drawn by mean L1rel, Eq. 17, GCPO's 'ws')")
    weight_method: str = config_field("normalized", "sampling=weighted: normalized (m_j / Σ m) | softmax (m)")
    timestep_fraction: float = config_field(1.0, "f of sampling=uniform|weighted (GCPO: 0.5 → 2 of 4 chunks); "
                                            "must stay 1.0 with sampling=all")
    drop_last: bool = config_field(False, "never train the last (lowest-noise) transition: chunks cover "
                                   "sample.num_steps − 1 transitions (DanceGRPO / GCPO convention; Flow-GRPO's "
                                   "fraction 0.99 does the same). Its per-step std is tiny (σ 0.001 → 0 on "
                                   "diffusers' SD3 schedule: std·√Δ ≈ 7e-4 at a = 0.7), so its log-prob gradient "
                                   "swamps the other steps' if trained; GCPOConfig and every preset set it")

    def validate(self) -> None:
        require_in(self, "chunking", CHUNKINGS)
        if self.chunking == "fixed":
            require(self, "sizes", len(self.sizes) > 0 and all(isinstance(s, int) and s >= 1 for s in self.sizes),
                    "must list positive chunk sizes for chunking=fixed", "e.g. --set {field}=2,3,4,7")
        require_int(self, "size", 1)
        require_int(self, "max_chunk", 1)
        require_int(self, "min_chunk", 1)
        require_int(self, "max_order", 0)
        require(self, "min_chunk", self.min_chunk <= self.max_chunk, f"exceeds max_chunk={self.max_chunk}",
                "set {field} <= chunk.max_chunk")
        require_in(self, "adaptive_scope", SCOPES)
        require_in(self, "sampling", SAMPLINGS)
        require_in(self, "weight_method", WEIGHT_METHODS)
        require_range(self, "timestep_fraction", 0.0, 1.0, low_inclusive=False)
        require(self, "timestep_fraction", self.sampling != "all" or self.timestep_fraction == 1.0,
                "is below 1 but sampling=all trains every chunk",
                "set chunk.sampling=uniform or weighted to train a fraction, or {field}=1.0")


# GCPO's section defaults live in these subclasses so that `--help` shows them (16 steps, units=custom).


@dataclass
class GCPOSampleConfig(SampleConfig):
    num_steps: int = config_field(17, "sampling steps T (17 by default: the last is not trained, chunk.drop_last, and "
                                  "GCPO's 2,3,4,7 chunks cover the other 16)")


@dataclass
class GCPOTrainConfig(TrainConfig):
    units: str = config_field("custom", "trained units; must stay custom: GCPO's chunk selector supplies them "
                              "(train.fraction, drop_last and chunk_sizes are unused; see chunk.*)")


@dataclass
class GCPORunDirConfig(RunDirConfig):
    dir: str = config_field("outputs/chunk_grpo", "run folder: metrics.jsonl, checkpoints/, grids, curves")


@dataclass
class GCPOConfig(RunConfig):
    """Chunk-level GRPO (GCPO): grouped rollouts → rewards → advantages → chunks of steps with one ratio each → loss."""

    sample: GCPOSampleConfig = config_field(default_factory=GCPOSampleConfig, help="rollouts")
    train: GCPOTrainConfig = config_field(default_factory=GCPOTrainConfig,
                                          help="advantages, loss, optimiser (train.units must be custom)")
    run: GCPORunDirConfig = config_field(default_factory=GCPORunDirConfig, help="outputs, checkpoints, evaluation")
    chunk: ChunkConfig = config_field(default_factory=lambda: ChunkConfig(drop_last=True),
                                      help="chunking and chunk sampling (GCPO, chunk_grpo.md §5–6)")

    def validate(self) -> None:
        require(self, "train.units", self.train.units == "custom",
                "must be 'custom': GCPO's chunk selector supplies the trained units", "set {field}=custom")
        super().validate()
        c, t, window = self.chunk, self.sample.num_steps, self.sample.sde_steps
        n = t - 1 if c.drop_last else t
        require(self, "chunk.drop_last", n >= 1, f"leaves no transition to train with sample.num_steps={t}",
                "set {field}=false or raise sample.num_steps")
        why = f"sample.num_steps={t}{', minus 1 for chunk.drop_last' if c.drop_last else ''}"
        if window:
            require(self, "sample.sde_steps", sorted(window) == list(range(len(window))),
                    "must be the first m transitions 0, 1, …, m−1 for GCPO (chunks cover the stochastic prefix)",
                    "e.g. --set {field}=0,1,2,3, or leave it empty to make every transition stochastic")
            n, why = min(n, len(window)), f"the {len(window)} stochastic transitions of sample.sde_steps"
        if c.chunking == "fixed":
            require(self, "chunk.sizes", sum(c.sizes) == n, f"sums to {sum(c.sizes)}, but {n} transitions are "
                    f"trained ({why})", f"make the sizes sum to {n}, or change sample.num_steps / sde_steps / "
                    "chunk.drop_last")
        elif c.chunking == "uniform":
            require(self, "chunk.size", c.size <= n, f"exceeds the {n} trained transitions",
                    f"set {{field}} to at most {n}")
        else:
            require(self, "chunk.min_chunk", c.min_chunk <= n, f"exceeds the {n} trained transitions",
                    f"set {{field}} to at most {n}")


# --------------------------------------------------------------------------------------------------------- presets


def _from_run(base: RunConfig, chunk: ChunkConfig, run_dir: str, **train) -> GCPOConfig:
    """A shared RunConfig preset turned GCPO: same settings, ``train.units = custom`` and the ``train`` field
    changes given, its own run dir."""
    return extend_run_config(GCPOConfig, base, chunk=chunk, train={"units": "custom", **train}, run={"dir": run_dir})


@register_preset(GCPOConfig, "shapes")
def shapes() -> GCPOConfig:
    """Shared's ``shapes`` preset (tiny shapes-world base, CPU; the first 4 of 8 flow_grpo SDE transitions
    stochastic, 512 samples per iteration) with those 4 transitions cut into fixed chunks [2, 2], all trained, for
    36 iterations instead of shared's 12. Over 5 seeds the GenEval-style gain was +0.077 ± 0.042 after 12,
    +0.147 ± 0.055 after 24 and +0.183 ± 0.022 after 36 iterations (docs/results/shapes_rl.md). About 40 minutes
    on one core beside another run."""
    return _from_run(get_preset(RunConfig, "shapes"), ChunkConfig(chunking="fixed", sizes=[2, 2], sampling="all",
                                                                  drop_last=True),
                     "outputs/chunk_grpo_shapes", iterations=36)


@register_preset(GCPOConfig, "flux-dev-hpsv3")
def flux_dev_hpsv3() -> GCPOConfig:
    """GCPO on FLUX.1-dev, Table 8 / ``finetune_hpsv3_chunk.sh`` (8 GPUs: ``accelerate launch --num_processes 8``).

    17 sampling transitions on DanceGRPO's shift-3 schedule with the flow_grpo SDE (a = 0.7), the last transition
    sampled but never trained (``chunk.drop_last``), so chunks [2, 3, 4, 7] cover the 16 trained ones; 2 of the 4
    chunks per sample drawn by Eq. 17 weights. 720 px, G = 12 with one initial noise per group, guidance embedding
    3.5 (the FluxAdapter's default) and no CFG. Per GPU 2 prompts × 12 = 24 samples, gradient accumulation 12 →
    2 optimiser steps per rollout. Full fine-tune, AdamW 1e-5, wd 1e-4, ratio clip 5e-5 both sides, advantages
    per group (n−1 std + 1e-8) clipped to ±5, max grad norm 0.01, no KL, no EMA, 150 steps. Evaluation: hybrid
    inference, the first 30 of 50 ODE steps with the trained model, the rest with the base. The paper's reward is
    HPSv3, which shared.rewards lacks: this preset uses ``hpsv2`` until ``hpsv3`` is registered.
    [authors' code: GCPO `scripts/finetune/finetune_hpsv3_chunk.sh`; paper Table 8]
    """
    return GCPOConfig(
        model=ModelConfig(path="", mixed_precision="bf16", gradient_checkpointing=True),
        lora=LoraConfig(rank=0),
        prompts=PromptConfig(source="file", per_iteration=16, spread_groups=False),
        reward=RewardConfig(names=["hpsv2"]),
        sample=GCPOSampleConfig(num_steps=17, kind="flow_grpo", noise_level=0.7, schedule="dance", shift=3.0,
                                guidance_scale=1.0, resolution=720, group_size=12, micro_batch_size=1,
                                same_noise_per_group=True),
        train=GCPOTrainConfig(iterations=150, units="custom", adv_std="group", adv_eps=1e-8, adv_unbiased=True,
                              adv_clip=5.0, clip_low=5e-5, clip_high=5e-5, kl_beta=0.0, lr=1e-5, weight_decay=1e-4,
                              max_grad_norm=0.01, steps_per_rollout=2, ema_decay=0.0),
        run=GCPORunDirConfig(dir="outputs/chunk_grpo_flux_hpsv3", save_every=30, eval_every=30, eval_steps=50,
                             eval_hybrid_steps=30),
        chunk=ChunkConfig(chunking="fixed", sizes=list(PAPER_SIZES), sampling="weighted",
                          weight_method="normalized", timestep_fraction=0.5, drop_last=True),
    )


@register_preset(GCPOConfig, "sd35m")
def sd35m() -> GCPOConfig:
    """Shared's ``flow_grpo`` preset (SD3.5-M, PickScore, 10 steps, CFG 4.5, LoRA r32) with chunks: Flow-GRPO trains
    the first ⌊10·0.99⌋ = 9 transitions, here as chunks [2, 3, 4] (``chunk.drop_last``), all trained. [our reading:
    GCPO reports no SD3.5 run; clip and KL stay Flow-GRPO's]"""
    return _from_run(get_preset(RunConfig, "flow_grpo"),
                     ChunkConfig(chunking="fixed", sizes=[2, 3, 4], sampling="all", drop_last=True),
                     "outputs/chunk_grpo_sd35m")
