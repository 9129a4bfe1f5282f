"""Flow-matching rollouts with per-step log-probs, and their recomputation under current weights.

``sample`` runs a denoiser (through a :class:`FlowModelAdapter`) from pure noise at σ_0 (1 for flow
models) down the sigma schedule, drawing each transition with :func:`shared.sde.sde_step` and
recording every latent x_0..x_T, the sigmas, the per-step log-probs, the prompt embeddings and the
group ids (shared_core.md §1, anchors: flow_grpo ``pipeline_with_logprob``, DanceGRPO ``flux_step``).
Latents are flow states; the adapter's ``to_flow`` / ``from_flow`` map the initial noise in and the final
state out (the identity except for SD 1.x, which is run in flow coordinates; ``kind="ddim"`` is DDPO's DDIM,
see :mod:`shared.sde`).

``step_log_prob`` re-scores stored transitions (x_t, x_{t+1}) with gradients. On-policy, with the
same micro-batch composition, the same dtype and the same CFG batching, the importance ratio
exp(log p_new − log p_old) is exactly 1 (anchor debugging rule §9.1); ``sample`` and
``step_log_prob`` therefore share one micro-batch plan, ``micro_batches``.

Hybrid inference (chunk_grpo.md §7, MixGRPO): ``sample(..., second_adapter=base, switch_step=k)`` runs steps
0..k−1 with ``adapter`` (the trained model) and steps k..T−1 with ``second_adapter`` (the base model); prompts
are encoded, noise drawn and images decoded by ``adapter``. k = T is the plain trained sample, k = 0 the base one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from shared.rollout.adapters import Conditioning, FlowModelAdapter
from shared.sde import SDEStepOutput, sde_step


@dataclass
class SamplerConfig:
    """How a rollout is drawn. ``sde_steps=None`` makes every step stochastic (trainable)."""

    num_steps: int = 10
    kind: str = "flow_grpo"  # "flow_grpo" | "dance" | "cps" | "ddim"
    noise_level: float = 0.7  # a for flow_grpo / cps, η for dance / ddim; 0 = deterministic Euler (ODE, DDIM η = 0)
    guidance_scale: float = 1.0  # CFG scale; > 1 batches [uncond, cond] (SD3) or runs true CFG (Flux)
    negative_prompt: str = ""
    height: int = 32
    width: int = 32
    sde_steps: tuple[int, ...] | None = None  # steps drawn with the SDE; the others are Euler (log-prob NaN)
    micro_batch_size: int | None = None  # rollout and recomputation chunk size; None = whole batch
    same_noise_per_group: bool = False  # DanceGRPO option: one initial noise per prompt group
    detach_uncond: bool = False  # stop gradients through the unconditional branch of CFG
    cps_logprob: str = "gaussian"

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be ≥ 1, got {self.num_steps}")
        if self.noise_level < 0:
            raise ValueError(f"noise_level must be ≥ 0, got {self.noise_level}")
        if self.kind == "ddim" and self.noise_level > 1:
            raise ValueError(f"noise_level is DDIM's eta for kind='ddim' and must lie in [0, 1], got {self.noise_level}")
        if self.sde_steps is not None:
            bad = [s for s in self.sde_steps if not 0 <= s < self.num_steps]
            if bad:
                raise ValueError(f"sde_steps {bad} outside [0, num_steps={self.num_steps})")

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def sde_mask(self) -> Tensor:
        """(T,) bool: which transitions are stochastic (and so have a log-prob)."""
        if self.sde_steps is None:
            return torch.ones(self.num_steps, dtype=torch.bool)
        mask = torch.zeros(self.num_steps, dtype=torch.bool)
        mask[list(self.sde_steps)] = True
        return mask


@dataclass
class Trajectory:
    """One batch of rollouts. Shapes: B samples, T steps, latent shape (...)."""

    latents: Tensor  # (B, T+1, ...) float32 flow states; latents[:, 0] is the initial noise at σ_0
    log_probs: Tensor  # (B, T) float32, NaN where the step was deterministic
    sigmas: Tensor  # (T+1,) float32, decreasing: 1 → 0 for flow models, σ(ᾱ[t_0]) → σ(final ᾱ) for SD 1.x
    sde_mask: Tensor  # (T,) bool
    cond: Conditioning
    group_ids: Tensor  # (B,) long: which prompt each sample belongs to
    prompts: list[str]
    height: int
    width: int
    images: Tensor | None = None  # (B, 3, H, W) in [0, 1]
    metadata: list[dict] | None = field(default=None)

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[1]

    def select(self, idx: Tensor | list[int]) -> "Trajectory":
        """The sub-batch ``idx`` (e.g. dropping samples whose reward was NaN)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        il = idx_t.tolist()
        return replace(
            self,
            latents=self.latents[idx_t],
            log_probs=self.log_probs[idx_t],
            cond=self.cond.index(idx_t),
            group_ids=self.group_ids[idx_t],
            prompts=[self.prompts[i] for i in il],
            images=None if self.images is None else self.images[idx_t],
            metadata=None if self.metadata is None else [self.metadata[i] for i in il],
        )


def _models_per_step(
    adapter: FlowModelAdapter, num_steps: int, second: FlowModelAdapter | None, switch_step: int | None
) -> list[FlowModelAdapter]:
    """The adapter of each step: ``adapter`` before ``switch_step``, ``second`` from it on."""
    if (second is None) != (switch_step is None):
        raise ValueError("pass second_adapter and switch_step together (hybrid sampling) or neither")
    if switch_step is None:
        return [adapter] * num_steps
    if isinstance(switch_step, bool) or not isinstance(switch_step, int) or not 0 <= switch_step <= num_steps:
        raise ValueError(f"switch_step must be an int in [0, num_steps={num_steps}], got {switch_step!r}")
    return [adapter if t < switch_step else second for t in range(num_steps)]


def micro_batches(batch_size: int, micro_batch_size: int | None) -> list[slice]:
    """The fixed chunking shared by sampling and recomputation."""
    mb = micro_batch_size or batch_size
    return [slice(i, min(i + mb, batch_size)) for i in range(0, batch_size, mb)]


def _step(cfg: SamplerConfig, v: Tensor, x: Tensor, s: Tensor, s_next: Tensor, stochastic: bool, **kw) -> SDEStepOutput:
    return sde_step(v, x, s, s_next, kind=cfg.kind, noise_level=cfg.noise_level if stochastic else 0.0, cps_logprob=cfg.cps_logprob, **kw)


@torch.no_grad()
def sample(
    adapter: FlowModelAdapter,
    prompts: list[str],
    config: SamplerConfig,
    *,
    group_size: int = 1,
    generator: torch.Generator | None = None,
    decode: bool = True,
    metadata: list[dict] | None = None,
    progress: bool = False,
    second_adapter: FlowModelAdapter | None = None,
    switch_step: int | None = None,
) -> Trajectory:
    """Draw ``group_size`` rollouts per prompt (group ids = prompt index).

    ``second_adapter`` and ``switch_step`` k (given together, 0 ≤ k ≤ T): steps t ≥ k predict the velocity with
    ``second_adapter`` instead of ``adapter`` (hybrid inference, see the module doc).
    """
    if not prompts:
        raise ValueError("sample() needs at least one prompt")
    if group_size < 1:
        raise ValueError(f"group_size must be ≥ 1, got {group_size}")
    models = _models_per_step(adapter, config.num_steps, second_adapter, switch_step)
    all_prompts = [p for p in prompts for _ in range(group_size)]
    group_ids = torch.arange(len(prompts)).repeat_interleave(group_size)
    meta = None if metadata is None else [m for m in metadata for _ in range(group_size)]
    b, h, w = len(all_prompts), config.height, config.width
    for model in {id(m): m for m in (adapter, *models)}.values():
        model.prepare(h, w)
    sigmas = adapter.sigmas(config.num_steps, h, w)
    mask = config.sde_mask()

    if config.same_noise_per_group:
        x0 = adapter.initial_latents(len(prompts), h, w, generator).repeat_interleave(group_size, dim=0)
    else:
        x0 = adapter.initial_latents(b, h, w, generator)
    x0 = adapter.to_flow(x0, sigmas[0])

    latents, log_probs, conds, images = [], [], [], []
    chunks = micro_batches(b, config.micro_batch_size)
    it = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc="rollout", leave=False)
    for sl in it:
        cond = adapter.encode(all_prompts[sl], cfg=config.cfg, negative_prompt=config.negative_prompt)
        x = x0[sl].float()
        xs, lps = [x], []
        for t in range(config.num_steps):
            v = models[t].velocity(x, sigmas[t], cond, guidance_scale=config.guidance_scale)
            out = _step(config, v, x, sigmas[t], sigmas[t + 1], bool(mask[t]), generator=generator)
            x = out.prev_sample.float()
            xs.append(x)
            lps.append(out.log_prob)
        latents.append(torch.stack(xs, dim=1))
        log_probs.append(torch.stack(lps, dim=1))
        conds.append(cond)
        if decode:
            images.append(adapter.decode(adapter.from_flow(x, sigmas[-1]), h, w))
    return Trajectory(
        latents=torch.cat(latents),
        log_probs=torch.cat(log_probs),
        sigmas=sigmas,
        sde_mask=mask,
        cond=Conditioning.cat(conds),
        group_ids=group_ids,
        prompts=all_prompts,
        height=h,
        width=w,
        images=torch.cat(images) if decode else None,
        metadata=meta,
    )


def step_log_prob(adapter: FlowModelAdapter, traj: Trajectory, step: int | Tensor, config: SamplerConfig, *,
                  rows: Tensor | None = None) -> SDEStepOutput:
    """Re-score transition ``step`` (x_step → x_step+1) of every sample under the current weights.

    ``step`` is one int for the whole batch or a (B,) tensor of per-sample steps (DanceGRPO's
    per-sample permutations). ``rows`` (N,) scores sample rows[k]'s step[k] instead, a row possibly more
    than once (GCPO's batched chunk forward), without copying the trajectory. Runs in
    ``config.micro_batch_size`` chunks, matching ``sample``. Gradients flow into the transformer; wrap in
    ``torch.no_grad()`` to get old/ref log-probs.
    """
    rows = torch.arange(traj.batch_size) if rows is None else rows.long().cpu()
    b = len(rows)
    steps = torch.full((b,), int(step)) if not torch.is_tensor(step) or step.ndim == 0 else step.long().cpu()
    if (~traj.sde_mask[steps]).any():
        raise ValueError(f"step(s) {sorted(set(steps[~traj.sde_mask[steps]].tolist()))} were sampled deterministically; they have no log-prob to train")
    adapter.prepare(traj.height, traj.width)
    outs: list[SDEStepOutput] = []
    for sl in micro_batches(b, config.micro_batch_size):
        st = steps[sl]
        uniform = bool((st == st[0]).all())
        sigma = traj.sigmas[st[0]] if uniform else traj.sigmas[st]
        sigma_next = traj.sigmas[st[0] + 1] if uniform else traj.sigmas[st + 1]
        x = traj.latents[rows[sl], st].to(adapter.device)
        x_next = traj.latents[rows[sl], st + 1].to(adapter.device)
        v = adapter.velocity(x, sigma, traj.cond.index(rows[sl]), guidance_scale=config.guidance_scale, detach_uncond=config.detach_uncond)
        outs.append(_step(config, v, x, sigma, sigma_next, True, prev_sample=x_next))
    if len(outs) == 1:
        return outs[0]
    cat = lambda name: torch.cat([getattr(o, name).expand_as(o.mean) if name in ("std", "step_std") else getattr(o, name) for o in outs])  # noqa: E731
    return SDEStepOutput(prev_sample=cat("prev_sample"), log_prob=cat("log_prob"), mean=cat("mean"), std=cat("std"), step_std=cat("step_std"))


def recompute_log_probs(adapter: FlowModelAdapter, traj: Trajectory, steps: list[int], config: SamplerConfig) -> Tensor:
    """(B, len(steps)) log-probs of the stored transitions ``steps`` under the current weights."""
    return torch.stack([step_log_prob(adapter, traj, s, config).log_prob for s in steps], dim=1)
