"""WFDiffuser's config: one validated dataclass tree and its presets (card §3, §6, §10).

    cfg = load_config(WFConfig, preset="pendulum", overrides=["model.kind=dd"])   # ConfigError names a bad field

Sections: ``data`` (dataset id, windows, normaliser, return label), ``model`` (planner kind, U-Net, wavelet,
conditioner, diffusion steps), ``train`` (optimiser, EMA, CFG dropout), ``plan`` (sampler, guidance, target,
temperature), ``eval`` (vector envs, episodes) and ``run`` (folder, checkpoints, resume).

Presets:

* ``pendulum``            (default) our offline Pendulum-v1 set (built on first use, < 1 s), H = 30, two small band
                          U-Nets, T = 20, 3000 steps; trains and evaluates on CPU in a few minutes (ours, card §10).
* ``inverted-pendulum``   the same recipe on our InvertedPendulum-v5 set (episodes capped at 200 steps, T = 10).
* ``hopper-medium``, ``halfcheetah-medium``, ``walker2d-medium``: the public code's hyperparameters (H = 94, 200 DDPM
                          steps, dim 128 with mults (1, 4, 8), w 1.2, target 0.9 of returns ÷ 400, CDF normaliser,
                          batch 32, lr 2e-4, EMA 0.995, 1e6 steps) on Minari ``mujoco/<env>/medium-v0``, read from
                          ``MINARI_DATASETS_PATH`` (GPU). Minari regenerated these sets on Gymnasium v5 envs: they are
                          not the D4RL-v2 data of the paper and the scores are not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

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

from wfdiffuser.diffusion import SAMPLERS
from wfdiffuser.models import BAND_LOSSES, CLIPS, CONDITIONERS, KINDS, ModelSpec

__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "PlanConfig", "RunConfig", "TrainConfig", "WFConfig"]

NORMALIZERS = ("gaussian", "limits", "cdf")
RETURN_LABELS = ("minmax", "scale")
MODES = ("haar_pad1", "zero", "periodization", "symmetric")


@dataclass
class DataConfig(Config):
    dataset: str = config_field("wfdiffuser/pendulum/multi-v0",
                                "Minari dataset id, read from $MINARI_DATASETS_PATH (default ~/.minari/datasets); "
                                "ours (wfdiffuser/...) are built offline by `wfdiffuser data`")
    build: bool = config_field(True, "build one of our offline datasets when it is missing (never downloads)")
    horizon: int = config_field(30, "planning horizon H (states per window); haar_pad1 with 3 U-Net levels needs "
                                "H ≡ 6 (mod 8)")
    normalizer: str = config_field("limits", "per-dimension normaliser: gaussian | limits | cdf (DD's)")
    discount: float = config_field(0.99, "γ of the return-to-go label")
    termination_penalty: float = config_field(-100.0, "added to the last reward of terminated episodes (0 = off)")
    return_label: str = config_field("minmax", "minmax (RTG mapped to [0, 1] over the data; ours) | scale "
                                     "(RTG / returns_scale; DD's)")
    returns_scale: float = config_field(400.0, "divisor of the RTG for return_label=scale")

    def validate(self) -> None:
        require(self, "dataset", bool(self.dataset), "is empty", "set {field} to a Minari id")
        require_int(self, "horizon", 3)
        require_in(self, "normalizer", NORMALIZERS)
        require_range(self, "discount", 0.0, 1.0)
        require_in(self, "return_label", RETURN_LABELS)
        require_positive(self, "returns_scale")


@dataclass
class ModelConfig(Config):
    kind: str = config_field("wfdiffuser", "wfdiffuser (DWT bands) | dd (Decision Diffuser, states) | diffuser "
                             "(Diffuser-style, states + actions)")
    dim: int = config_field(32, "U-Net base channels (public code: 128)")
    dim_mults: list[int] = config_field(default_factory=lambda: [1, 2],
                                        help="channel multipliers per U-Net level (public code: 1,4,8)")
    emb: int = config_field(32, "width of the time and return embeddings")
    kernel_size: int = config_field(5, "temporal convolution kernel")
    groups: int = config_field(8, "GroupNorm groups (must divide dim·mult)")
    wavelet: str = config_field("haar", "pywt wavelet name (haar, db2, sym4, ...)")
    levels: int = config_field(1, "DWT levels (bands = levels + 1)")
    mode: str = config_field("haar_pad1", "haar_pad1 (public code: zero-pad 1, Haar, one level) | zero | "
                             "periodization | symmetric (pywt modes)")
    conditioner: str = config_field("stft_xattn", "cross-band conditioner: state_embedding (public code) | "
                                    "stft_xattn (ours: STFT + cross attention on the noisy bands) | none")
    cond_dim: int = config_field(32, "conditioner output width per band")
    cond_hidden: int = config_field(128, "conditioner hidden width (public code: 512)")
    stft_n_fft: int = config_field(8, "stft_xattn: n_fft (assumed; needs n_fft//2 < band length)")
    stft_hop: int = config_field(2, "stft_xattn: hop (assumed)")
    drop_cross_in_uncond: bool = config_field(False, "zero the conditioner output in the CFG unconditional pass")
    returns_condition: bool = config_field(True, "condition on the return label (CFG); false = unconditional model")
    inv_hidden: int = config_field(256, "inverse-dynamics MLP width (dd, wfdiffuser)")
    action_weight: float = config_field(10.0, "diffuser: loss weight of a_0")
    band_loss: str = config_field("self_weighted", "self_weighted (public code: K·ΣL²/ΣL) | sum")
    diffusion_steps: int = config_field(20, "DDPM training steps T (public code: 200)")
    clip: str = config_field("range", "clip of the predicted x0 while sampling: range (ours: the band's attainable "
                             "range, ±√2 in a Haar low band) | unit (public code: ±1 in every band) | none")

    def validate(self) -> None:
        require_in(self, "kind", KINDS)
        for name in ("dim", "emb", "kernel_size", "groups", "cond_dim", "cond_hidden", "inv_hidden",
                     "diffusion_steps", "stft_n_fft", "stft_hop"):
            require_int(self, name, 1)
        require(self, "dim_mults", bool(self.dim_mults) and all(int(m) >= 1 for m in self.dim_mults),
                "must be a non-empty list of positive integers", "e.g. --set {field}=1,2,4")
        require_int(self, "levels", 1)
        require_in(self, "mode", MODES)
        require(self, "levels", self.mode != "haar_pad1" or self.levels == 1, "must be 1 with mode=haar_pad1",
                "set {field}=1 or choose another model.mode")
        require(self, "wavelet", self.mode != "haar_pad1" or self.wavelet == "haar", "must be haar with haar_pad1",
                "set {field}=haar or choose another model.mode")
        require_in(self, "conditioner", CONDITIONERS)
        require_in(self, "band_loss", BAND_LOSSES)
        require_in(self, "clip", CLIPS)
        require_non_negative(self, "action_weight")


@dataclass
class TrainConfig(Config):
    steps: int = config_field(3000, "optimiser steps")
    batch_size: int = config_field(64, "windows per step")
    lr: float = config_field(1e-3, "Adam learning rate (public code: 2e-4)")
    ema_decay: float = config_field(0.995, "EMA of the weights used for planning (public code: 0.995)")
    p_drop: float = config_field(0.25, "probability of dropping the return label (CFG training)")
    max_grad_norm: float = config_field(0.0, "gradient clipping (0 = off)")
    seed: int = config_field(0, "seed of initialisation, batches and noise")

    def validate(self) -> None:
        require_int(self, "steps", 1)
        require_int(self, "batch_size", 1)
        require_positive(self, "lr")
        require_range(self, "ema_decay", 0.0, 1.0, high_inclusive=False)
        require_range(self, "p_drop", 0.0, 1.0)
        require_non_negative(self, "max_grad_norm")


@dataclass
class PlanConfig(Config):
    sampler: str = config_field("ddpm", "ddpm (all T steps, as the public code) | ddim (sample_steps, deterministic)")
    sample_steps: int = config_field(0, "ddim steps (0 = diffusion_steps)")
    guidance: float = config_field(1.2, "CFG weight w: 0 = unconditional, 1 = conditional (public code: 1.2)")
    target: float = config_field(1.0, "return label to condition on (minmax: 1 = best return in the data; "
                                 "public code: 0.9 with scale)")
    temperature: float = config_field(0.5, "low temperature: scale of the initial and step noise (DD: 0.5)")
    fixed_noise: bool = config_field(False, "reuse the same sampler noise at every replanning step (ours): the "
                                     "action becomes a deterministic function of the state")
    batch_cfg: bool = config_field(True, "conditional and unconditional passes in one forward (public code: two)")
    batch_bands: bool = config_field(False, "all band U-Nets in one vmapped forward (equal band lengths)")

    def validate(self) -> None:
        require_in(self, "sampler", SAMPLERS)
        require_int(self, "sample_steps", 0)
        require_non_negative(self, "guidance")
        require_non_negative(self, "temperature")


@dataclass
class EvalConfig(Config):
    episodes: int = config_field(10, "evaluation episodes (fixed env seeds eval.seed, eval.seed+1, ...)")
    n_envs: int = config_field(10, "vector envs stepped together (plans batched over them)")
    seed: int = config_field(1000, "first env seed of the evaluation")
    max_steps: int = config_field(0, "episode cap (0 = the env's own; our InvertedPendulum set uses 200)")

    def validate(self) -> None:
        require_int(self, "episodes", 1)
        require_int(self, "n_envs", 1)
        require_int(self, "max_steps", 0)


@dataclass
class RunConfig(RunFolderConfig):
    dir: str = config_field("outputs/wfdiffuser", "run folder: config.json, metrics.jsonl, checkpoints/, eval.json")
    save_every: int = config_field(1000, "checkpoint every n steps (0 = only at the end)")
    log_every: int = config_field(100, "log the mean losses every n steps")
    evaluate: bool = config_field(True, "evaluate in the env after training (writes eval.json)")
    cpu: bool = config_field(False, "force CPU even when a GPU is present")
    threads: int = config_field(1, "torch CPU threads (one is fastest for the small CPU models; 0 = torch's default)")

    def validate(self) -> None:
        super().validate()
        require_int(self, "log_every", 1)
        require_int(self, "threads", 0)


@dataclass
class WFConfig(Config):
    """Train a trajectory diffusion planner (WFDiffuser, Decision Diffuser or Diffuser-style) on an offline dataset,
    then plan with it in the environment: windows → DWT bands → ε-prediction with return CFG → in-painted receding-
    horizon planning → inverse dynamics."""

    data: DataConfig = config_field(default_factory=DataConfig, help="dataset and windows")
    model: ModelConfig = config_field(default_factory=ModelConfig, help="the planner")
    train: TrainConfig = config_field(default_factory=TrainConfig, help="optimiser")
    plan: PlanConfig = config_field(default_factory=PlanConfig, help="sampling plans")
    eval: EvalConfig = config_field(default_factory=EvalConfig, help="evaluation in the env")
    run: RunConfig = config_field(default_factory=RunConfig, help="outputs")

    def validate(self) -> None:
        from wfdiffuser.models import band_lengths

        m = self.model
        try:
            band_lengths(self.model_spec(1, 1))
        except ValueError as err:
            require(self, "data.horizon", False, f"does not fit the model: {err}",
                    "choose a horizon the message names, or change model.dim_mults")
        if m.conditioner == "state_embedding" and m.kind == "wfdiffuser":
            require(self, "model.levels", m.levels == 1, "must be 1 for conditioner=state_embedding (two bands)",
                    "set {field}=1 or model.conditioner=stft_xattn")
        require(self, "model.clip", m.clip == "none" or self.data.normalizer != "gaussian",
                "assumes states normalised into [-1, 1], which data.normalizer=gaussian does not do",
                "set {field}=none or data.normalizer=limits|cdf")
        require(self, "plan.sample_steps", self.plan.sample_steps <= m.diffusion_steps,
                f"must be <= model.diffusion_steps ({m.diffusion_steps})", "lower {field}")

    def model_spec(self, obs_dim: int, act_dim: int) -> ModelSpec:
        m = self.model
        return ModelSpec(kind=m.kind, obs_dim=obs_dim, act_dim=act_dim, horizon=self.data.horizon, dim=m.dim,
                         dim_mults=tuple(m.dim_mults), emb=m.emb, kernel_size=m.kernel_size, groups=m.groups,
                         wavelet=m.wavelet, levels=m.levels, mode=m.mode, conditioner=m.conditioner,
                         cond_dim=m.cond_dim, cond_hidden=m.cond_hidden, stft_n_fft=m.stft_n_fft,
                         stft_hop=m.stft_hop, drop_cross_in_uncond=m.drop_cross_in_uncond,
                         returns_condition=m.returns_condition, inv_hidden=m.inv_hidden,
                         action_weight=m.action_weight, band_loss=m.band_loss, diffusion_steps=m.diffusion_steps,
                         clip=m.clip)


@register_preset(WFConfig)
def pendulum() -> WFConfig:
    """Our offline Pendulum-v1 set on CPU in a few minutes: multi-v0 (half spinner, a quarter swing-up, a quarter
    random), H = 30, pad-1 Haar bands, two 2-level U-Nets (dim 32) with our STFT + cross-attention conditioner,
    T = 20, 3,000 steps of batch 64 (card §10's miniature of the public design; the public code's state-embedding
    conditioner is `--set model.conditioner=state_embedding`)."""
    return WFConfig()


@register_preset(WFConfig, "inverted-pendulum")
def inverted_pendulum() -> WFConfig:
    """Our offline InvertedPendulum-v5 set, episodes capped at 200 steps, T = 10 (card §10)."""
    return WFConfig(data=DataConfig(dataset="wfdiffuser/inverted-pendulum/mixed-v0"),
                    model=ModelConfig(diffusion_steps=10), eval=EvalConfig(max_steps=200),
                    run=RunConfig(dir="outputs/wfdiffuser_inverted_pendulum"))


def _locomotion(env: str) -> WFConfig:
    return WFConfig(
        data=DataConfig(dataset=f"mujoco/{env}/medium-v0", build=False, horizon=94, normalizer="cdf",
                        return_label="scale", returns_scale=400.0),
        model=ModelConfig(dim=128, dim_mults=[1, 4, 8], emb=128, conditioner="state_embedding", cond_dim=128,
                          cond_hidden=512, diffusion_steps=200),
        train=TrainConfig(steps=1_000_000, batch_size=32, lr=2e-4, ema_decay=0.995),
        plan=PlanConfig(guidance=1.2, target=0.9, temperature=0.5),
        eval=EvalConfig(episodes=10, n_envs=10),
        run=RunConfig(dir=f"outputs/wfdiffuser_{env}_medium", save_every=10_000, log_every=1000))


@register_preset(WFConfig, "hopper-medium")
def hopper_medium() -> WFConfig:
    """Public-code hyperparameters on Minari mujoco/hopper/medium-v0 (GPU; v5 data, not D4RL-v2)."""
    return _locomotion("hopper")


@register_preset(WFConfig, "halfcheetah-medium")
def halfcheetah_medium() -> WFConfig:
    """Public-code hyperparameters on Minari mujoco/halfcheetah/medium-v0 (GPU; v5 data, not D4RL-v2; DD issue #1:
    returns_scale 400 is too small for HalfCheetah, CleanDiffuser uses ~1000-3600)."""
    return _locomotion("halfcheetah")


@register_preset(WFConfig, "walker2d-medium")
def walker2d_medium() -> WFConfig:
    """Public-code hyperparameters on Minari mujoco/walker2d/medium-v0 (GPU; v5 data, not D4RL-v2)."""
    return _locomotion("walker2d")
