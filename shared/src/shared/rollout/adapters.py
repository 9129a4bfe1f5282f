"""Model adapters: the small seam between a diffusers text-to-image pipeline and our flow sampler.

An adapter knows how one model family encodes prompts, lays out latents, predicts the (guided)
velocity and decodes latents to images. The sampler and the log-prob recomputation only talk to
this protocol, so SD3/SD3.5, FLUX (and the tiny shapes-world base, an SD3 pipeline) and Stable
Diffusion 1.x share one rollout path.

Velocity convention (shared_core.md §1): the denoiser predicts v ≈ x1 − x0 and the Euler step
is x′ = x + (σ′ − σ)·v, exactly ``FlowMatchEulerDiscreteScheduler.step``.
CFG (§7): the guided velocity v = v_u + w·(v_c − v_u) is what the SDE step sees, at sampling and at
recomputation; ``detach_uncond`` stops gradients through v_u (Flow-GRPO's ``train_sd3.py``).

Stable Diffusion 1.x (:class:`SD1Adapter`) is an ε-prediction VP model; it is run in *flow coordinates*
(:mod:`shared.sde`, "DDIM in flow coordinates"): the sampler's state is x = y/c at σ = √(1−ᾱ)/c, c = √ᾱ + √(1−ᾱ),
for the VP latent y, and the adapter returns v = (ε̂ − x)/(1−σ). The Euler step is then DDIM with η = 0 and the
SDE kind ``ddim`` is DDIM with η > 0. ``to_flow`` / ``from_flow`` map between the pipeline's own latents (the
initial noise, what the VAE decodes) and the sampler's state; they are the identity for flow-matching models.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from shared.sde import sigma_from_alpha_bar, vp_scale


@dataclass
class Conditioning:
    """Text conditioning for a batch. Tensors are batch-first; ``negative_*`` is set only with CFG."""

    prompt_embeds: Tensor
    pooled: Tensor | None  # None for SD 1.x (its UNet sees the token embeddings only)
    negative_prompt_embeds: Tensor | None = None
    negative_pooled: Tensor | None = None
    text_ids: Tensor | None = None  # Flux only: (L_txt, 3) position ids, shared by the batch

    def index(self, idx: Tensor | slice | list[int]) -> "Conditioning":
        """Select batch rows (``text_ids`` is shared, not batched)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if (v is None or f.name == "text_ids") else v[idx]
        return Conditioning(**out)

    def to(self, device: torch.device | str) -> "Conditioning":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self) if getattr(self, f.name) is not None})

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        out: dict[str, Any] = {}
        for f in fields(Conditioning):
            vals = [getattr(c, f.name) for c in items]
            if vals[0] is None or f.name == "text_ids":
                out[f.name] = vals[0]
            else:
                out[f.name] = torch.cat(vals)
        return Conditioning(**out)


@runtime_checkable
class FlowModelAdapter(Protocol):
    """What the sampler needs from a text-to-image model, seen as a flow x_σ = (1−σ)·x0 + σ·x1."""

    transformer: torch.nn.Module  # the trained denoiser (SD 1.x: the UNet)

    def encode(self, prompts: list[str], *, cfg: bool, negative_prompt: str = "") -> Conditioning: ...

    def prepare(self, height: int, width: int) -> None:
        """Set up per-resolution state (e.g. Flux image position ids) before velocity() calls."""
        ...

    def initial_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> Tensor:
        """The pipeline's initial noise (its own latent space; ``to_flow`` makes it the sampler's first state)."""
        ...

    def sigmas(self, num_steps: int, height: int, width: int) -> Tensor:
        """(T+1,) decreasing σ grid in [0, 1] of a T-step rollout."""
        ...

    def to_flow(self, latents: Tensor, sigma: Tensor) -> Tensor:
        """Pipeline latents at noise level σ → the sampler's flow state (identity for flow models)."""
        ...

    def from_flow(self, latents: Tensor, sigma: Tensor) -> Tensor:
        """Inverse of ``to_flow``: the flow state at σ → pipeline latents (what ``decode`` takes)."""
        ...

    def velocity(self, latents: Tensor, sigma: Tensor, cond: Conditioning, *, guidance_scale: float, detach_uncond: bool = False) -> Tensor: ...

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Pipeline latents (``from_flow`` of the final state) → (B, 3, H, W) images in [0, 1]."""
        ...


def _guided(v_uncond: Tensor, v_cond: Tensor, w: float, detach_uncond: bool) -> Tensor:
    """Classifier-free guidance v = v_u + w·(v_c − v_u)."""
    if detach_uncond:
        v_uncond = v_uncond.detach()
    return v_uncond + w * (v_cond - v_uncond)


class _PipelineAdapter:
    """Shared pieces: device/dtype bookkeeping, scheduler sigmas and VAE decoding."""

    #: the pipeline attribute holding the denoiser, exposed as ``self.transformer`` whatever its architecture
    denoiser_attribute = "transformer"

    def __init__(self, pipe, *, max_sequence_length: int | None = None):
        self.pipe = pipe
        self.transformer = getattr(pipe, self.denoiser_attribute)
        self.max_sequence_length = max_sequence_length or getattr(pipe.tokenizer, "model_max_length", 77)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def prepare(self, height: int, width: int) -> None:
        """Nothing to prepare by default."""

    def to_flow(self, latents: Tensor, sigma: Tensor) -> Tensor:
        """Flow-matching pipelines already sample in flow coordinates."""
        return latents

    def from_flow(self, latents: Tensor, sigma: Tensor) -> Tensor:
        """Flow-matching pipelines already sample in flow coordinates."""
        return latents

    @property
    def pixel_space(self) -> bool:
        """No VAE: the transformer works on RGB pixels in [−1, 1] (the shapes-world base)."""
        return getattr(self.pipe, "vae", None) is None

    @property
    def vae_scale_factor(self) -> int:
        return 1 if self.pixel_space else self.pipe.vae_scale_factor

    def _vae_decode(self, latents: Tensor) -> Tensor:
        vae = self.pipe.vae
        if vae is None:
            return (latents.float() / 2 + 0.5).clamp(0, 1)
        z = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        images = vae.decode(z, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)


class SD3Adapter(_PipelineAdapter):
    """``StableDiffusion3Pipeline`` (SD3, SD3.5, and the shapes-world base)."""

    def encode(self, prompts: list[str], *, cfg: bool, negative_prompt: str = "") -> Conditioning:
        with torch.no_grad():
            pe, npe, pooled, npooled = self.pipe.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                do_classifier_free_guidance=cfg,
                negative_prompt=[negative_prompt] * len(prompts) if cfg else None,
                max_sequence_length=self.max_sequence_length,
            )
        return Conditioning(pe, pooled, npe if cfg else None, npooled if cfg else None)

    def initial_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> Tensor:
        f = self.vae_scale_factor
        c = self.transformer.config.in_channels
        return torch.randn((batch, c, height // f, width // f), generator=generator, dtype=torch.float32).to(self.device)

    def sigmas(self, num_steps: int, height: int, width: int) -> Tensor:
        sched = self.pipe.scheduler
        sched.set_timesteps(num_steps, device="cpu")
        return sched.sigmas.float().clone()

    def _forward(self, latents: Tensor, timestep: Tensor, embeds: Tensor, pooled: Tensor) -> Tensor:
        return self.transformer(
            hidden_states=latents.to(self.dtype),
            timestep=timestep,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]

    def velocity(self, latents: Tensor, sigma: Tensor, cond: Conditioning, *, guidance_scale: float, detach_uncond: bool = False) -> Tensor:
        b = latents.shape[0]
        timestep = (sigma.float() * 1000).expand(b).to(self.device) if sigma.ndim == 0 else sigma.float().to(self.device) * 1000
        if cond.negative_prompt_embeds is None:
            return self._forward(latents, timestep, cond.prompt_embeds, cond.pooled).float()
        # One batched forward of [uncond, cond], as the diffusers pipeline does.
        v = self._forward(
            torch.cat([latents, latents]),
            torch.cat([timestep, timestep]),
            torch.cat([cond.negative_prompt_embeds, cond.prompt_embeds]),
            torch.cat([cond.negative_pooled, cond.pooled]),
        ).float()
        v_u, v_c = v.chunk(2)
        return _guided(v_u, v_c, guidance_scale, detach_uncond)

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        return self._vae_decode(latents)


class FluxAdapter(_PipelineAdapter):
    """``FluxPipeline``: packed 2×2 latents, dynamic shift, distilled guidance embedding; optional true CFG."""

    def __init__(self, pipe, *, max_sequence_length: int | None = None, distilled_guidance: float = 3.5):
        super().__init__(pipe, max_sequence_length=max_sequence_length)
        self.distilled_guidance = distilled_guidance
        self._img_ids: Tensor | None = None

    def encode(self, prompts: list[str], *, cfg: bool, negative_prompt: str = "") -> Conditioning:
        with torch.no_grad():
            pe, pooled, text_ids = self.pipe.encode_prompt(
                prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
            )
            npe = npooled = None
            if cfg:
                npe, npooled, _ = self.pipe.encode_prompt(
                    prompt=[negative_prompt] * len(prompts), prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
                )
        return Conditioning(pe, pooled, npe, npooled, text_ids=text_ids)

    def _latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        return 2 * (height // (f * 2)), 2 * (width // (f * 2))

    def prepare(self, height: int, width: int) -> None:
        """Build the image-token position ids for this resolution."""
        h, w = self._latent_hw(height, width)
        self._img_ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)

    def initial_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> Tensor:
        h, w = self._latent_hw(height, width)
        c = self.transformer.config.in_channels // 4
        noise = torch.randn((batch, c, h, w), generator=generator, dtype=torch.float32)
        return self.pipe._pack_latents(noise, batch, c, h, w).to(self.device)

    def sigmas(self, num_steps: int, height: int, width: int) -> Tensor:
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sched = self.pipe.scheduler
        h, w = self._latent_hw(height, width)
        seq_len = (h // 2) * (w // 2)
        mu = calculate_shift(
            seq_len,
            sched.config.get("base_image_seq_len", 256),
            sched.config.get("max_image_seq_len", 4096),
            sched.config.get("base_shift", 0.5),
            sched.config.get("max_shift", 1.15),
        )
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu, device="cpu")
        return sched.sigmas.float().clone()

    def _forward(self, latents: Tensor, sigma: Tensor, embeds: Tensor, pooled: Tensor, text_ids: Tensor, img_ids: Tensor) -> Tensor:
        b = latents.shape[0]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.distilled_guidance, device=self.device, dtype=torch.float32)
        return self.transformer(
            hidden_states=latents.to(self.dtype),
            timestep=sigma.to(self.dtype),
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]

    def velocity(self, latents: Tensor, sigma: Tensor, cond: Conditioning, *, guidance_scale: float, detach_uncond: bool = False) -> Tensor:
        b = latents.shape[0]
        sig = sigma.float().expand(b).to(self.device) if sigma.ndim == 0 else sigma.float().to(self.device)
        # The pipeline feeds timestep/1000 with timestep = 1000·σ; we reproduce its rounding path.
        sig = (sig * 1000).to(self.dtype) / 1000
        if self._img_ids is None or self._img_ids.shape[0] != latents.shape[1]:
            raise RuntimeError("FluxAdapter: call prepare(height, width) for this resolution before velocity()")
        img_ids = self._img_ids
        v_c = self._forward(latents, sig, cond.prompt_embeds, cond.pooled, cond.text_ids, img_ids).float()
        if cond.negative_prompt_embeds is None:
            return v_c
        v_u = self._forward(latents, sig, cond.negative_prompt_embeds, cond.negative_pooled, cond.text_ids, img_ids).float()
        return _guided(v_u, v_c, guidance_scale, detach_uncond)

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        z = self.pipe._unpack_latents(latents, height, width, self.pipe.vae_scale_factor)
        return self._vae_decode(z)


def _ddim_scheduler(scheduler):
    """A private ``DDIMScheduler`` with ``scheduler``'s training noise schedule, checked for what SD1Adapter supports.

    SD 1.x checkpoints ship a PNDM (or another DDPM-family) scheduler; DDPO swaps in
    ``DDIMScheduler.from_config(pipeline.scheduler.config)``, which keeps β_start, β_end, beta_schedule,
    steps_offset and set_alpha_to_one. We do the same on a copy, so the pipeline's own scheduler is untouched.
    A config without a ``clip_sample`` entry (PNDM has no such option and never clips) gets clip_sample=False
    rather than DDIMScheduler's default True.
    """
    from diffusers import DDIMScheduler

    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(
            f"SD1Adapter needs a DDPM-family scheduler (one with alphas_cumprod, e.g. DDIMScheduler or PNDMScheduler), "
            f"got {type(scheduler).__name__}"
        )
    overrides = {} if "clip_sample" in scheduler.config else {"clip_sample": False}
    ddim = DDIMScheduler.from_config(scheduler.config, **overrides)
    config = ddim.config
    if config.prediction_type != "epsilon":
        raise ValueError(
            f"SD1Adapter supports epsilon-prediction models only; the scheduler config has prediction_type="
            f"{config.prediction_type!r} (SD 2.x 768-v models predict v and are not supported)"
        )
    if config.clip_sample or config.thresholding:
        raise ValueError(
            "SD1Adapter does not clip or threshold x̂0: set clip_sample=False and thresholding=False in the scheduler "
            "config (SD 1.x configs have clip_sample=False)"
        )
    return ddim


class SD1Adapter(_PipelineAdapter):
    """``StableDiffusionPipeline`` (SD 1.x; ε-prediction UNet + DDIM + CLIP text encoder + AutoencoderKL).

    Runs in flow coordinates (module doc and :mod:`shared.sde`, "DDIM in flow coordinates"): with c(σ) =
    1/√((1−σ)² + σ²), the VP latent is y = c·x. Pieces:

    * ``sigmas`` follows ``DDIMScheduler.set_timesteps`` (SD 1.x: ``timestep_spacing="leading"``,
      ``steps_offset=1``): σ_k = σ(ᾱ[t_k]) for the T timesteps, and the last σ is that of DDIM's final ᾱ
      (ᾱ[t_{T−1} − N/T], or ``final_alpha_cumprod`` = ᾱ[0] when ``set_alpha_to_one=False``). DDIM steps t → t − N/T;
      spacings where that is not the next timestep are refused.
    * ``velocity`` calls the UNet at the integer timestep of σ with y = c(σ)·x, applies CFG on ε
      (ε_u + w·(ε_c − ε_u), one batched [uncond, cond] forward as the diffusers pipeline does) and returns
      v = (ε̂ − x)/(1−σ), i.e. ε̂ − x̂0. The SDE kind ``ddim`` with η = ``noise_level`` then reproduces
      ``DDIMScheduler.step(..., eta=η)``; η = 0 (or any kind at noise 0) is deterministic DDIM.
    * ``initial_latents`` is the pipeline's N(0, I) noise y_T; ``to_flow`` / ``from_flow`` divide / multiply by c(σ);
      ``decode`` takes y (``from_flow`` of the final state) and decodes y / ``scaling_factor`` like the pipeline.

    The scheduler is a private ``DDIMScheduler.from_config`` copy of the pipeline's (:func:`_ddim_scheduler`).
    """

    denoiser_attribute = "unet"
    #: largest |σ − σ(ᾱ[t])| accepted when mapping σ back to a training timestep (grid spacing ≥ 4e-4 for SD 1.x)
    TIMESTEP_TOLERANCE = 1e-5

    def __init__(self, pipe, *, max_sequence_length: int | None = None):
        super().__init__(pipe, max_sequence_length=max_sequence_length)
        self.scheduler = _ddim_scheduler(pipe.scheduler)
        self._train_sigmas = sigma_from_alpha_bar(self.scheduler.alphas_cumprod.double())  # (N,), increasing in t

    def encode(self, prompts: list[str], *, cfg: bool, negative_prompt: str = "") -> Conditioning:
        with torch.no_grad():
            pe, npe = self.pipe.encode_prompt(
                prompt=prompts,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=cfg,
                negative_prompt=[negative_prompt] * len(prompts) if cfg else None,
            )
        return Conditioning(pe, None, npe if cfg else None, None)

    def initial_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> Tensor:
        f = self.vae_scale_factor
        c = self.transformer.config.in_channels
        return torch.randn((batch, c, height // f, width // f), generator=generator, dtype=torch.float32).to(self.device)

    def sigmas(self, num_steps: int, height: int, width: int) -> Tensor:
        sched = self.scheduler
        sched.set_timesteps(num_steps, device="cpu")
        t = sched.timesteps.long()
        t_prev = t - sched.config.num_train_timesteps // num_steps  # DDIMScheduler.step's previous timestep
        if not torch.equal(t_prev[:-1], t[1:]):
            raise ValueError(
                f"DDIM with timestep_spacing={sched.config.timestep_spacing!r} and {num_steps} steps steps from t to "
                f"t − {sched.config.num_train_timesteps // num_steps}, which is not the next timestep "
                f"({t.tolist()}); use timestep_spacing='leading' (SD 1.x) or a step count dividing "
                f"{sched.config.num_train_timesteps}"
            )
        alphas = sched.alphas_cumprod.double()
        last = int(t_prev[-1])
        final = alphas[last] if last >= 0 else torch.as_tensor(float(sched.final_alpha_cumprod), dtype=torch.float64)
        return sigma_from_alpha_bar(torch.cat([alphas[t], final.reshape(1)])).float()

    def timesteps(self, sigma: Tensor) -> Tensor:
        """(n,) integer training timesteps t with σ(ᾱ[t]) = σ, for a 0-d or (n,) σ; raises off the DDIM grid."""
        s = sigma.detach().double().reshape(-1).cpu()
        err, t = (self._train_sigmas[None, :] - s[:, None]).abs().min(dim=1)
        if bool((err > self.TIMESTEP_TOLERANCE).any()):
            raise ValueError(
                f"SD1Adapter: sigma(s) {s[err > self.TIMESTEP_TOLERANCE].tolist()} are not noise levels of the "
                "UNet's training timesteps; SD 1.x rolls out on its DDIM grid only (sample.schedule=model)"
            )
        return t

    @staticmethod
    def _broadcast(sigma: Tensor, like: Tensor) -> Tensor:
        """σ (0-d or per sample) as float32 on ``like``'s device, broadcastable to ``like``."""
        sig = sigma.to(like.device, torch.float32)
        return sig if sig.ndim == 0 else sig.view(-1, *([1] * (like.ndim - 1)))

    def _scale(self, sigma: Tensor, like: Tensor) -> Tensor:
        """c(σ) broadcastable to ``like``."""
        return vp_scale(self._broadcast(sigma, like))

    def to_flow(self, latents: Tensor, sigma: Tensor) -> Tensor:
        """x = y / c(σ)."""
        return latents / self._scale(sigma, latents)

    def from_flow(self, latents: Tensor, sigma: Tensor) -> Tensor:
        """y = c(σ)·x."""
        return latents * self._scale(sigma, latents)

    def _forward(self, latents: Tensor, timestep: Tensor, embeds: Tensor) -> Tensor:
        return self.transformer(latents.to(self.dtype), timestep, encoder_hidden_states=embeds, return_dict=False)[0]

    def velocity(self, latents: Tensor, sigma: Tensor, cond: Conditioning, *, guidance_scale: float, detach_uncond: bool = False) -> Tensor:
        b = latents.shape[0]
        t = self.timesteps(sigma).to(self.device)
        t = t.expand(b) if t.numel() == 1 else t
        x = latents.float()
        y = self.from_flow(x, sigma)
        if cond.negative_prompt_embeds is None:
            eps = self._forward(y, t, cond.prompt_embeds).float()
        else:
            out = self._forward(torch.cat([y, y]), torch.cat([t, t]),
                                torch.cat([cond.negative_prompt_embeds, cond.prompt_embeds])).float()
            eps_u, eps_c = out.chunk(2)
            eps = _guided(eps_u, eps_c, guidance_scale, detach_uncond)
        return (eps - x) / (1 - self._broadcast(sigma, x))

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        return self._vae_decode(latents)


def adapter_for(pipe, **kwargs) -> FlowModelAdapter:
    """Pick the adapter for a diffusers pipeline by class (SD3 family, Flux family or ``StableDiffusionPipeline``)."""
    name = type(pipe).__name__
    if name.startswith("StableDiffusion3"):
        return SD3Adapter(pipe, **kwargs)
    if name.startswith("Flux"):
        return FluxAdapter(pipe, **kwargs)
    if name == "StableDiffusionPipeline":
        return SD1Adapter(pipe, **kwargs)
    raise TypeError(
        f"no rollout adapter for {name}; supported: StableDiffusion3*Pipeline, Flux*Pipeline, StableDiffusionPipeline "
        "(SD 1.x)"
    )
