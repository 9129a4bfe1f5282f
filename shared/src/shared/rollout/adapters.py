"""Model adapters: the small seam between a diffusers flow-matching pipeline and our sampler.

An adapter knows how one model family encodes prompts, lays out latents, predicts the (guided)
velocity and decodes latents to images. The sampler and the log-prob recomputation only talk to
this protocol, so SD3/SD3.5 and FLUX (and the tiny shapes-world base, an SD3 pipeline) share one
rollout path.

Velocity convention (shared_core.md §1): the transformer predicts v ≈ x1 − x0 and the Euler step
is x′ = x + (σ′ − σ)·v, exactly ``FlowMatchEulerDiscreteScheduler.step``.
CFG (§7): the guided velocity v = v_u + w·(v_c − v_u) is what the SDE step sees, at sampling and at
recomputation; ``detach_uncond`` stops gradients through v_u (Flow-GRPO's ``train_sd3.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Conditioning:
    """Text conditioning for a batch. Tensors are batch-first; ``negative_*`` is set only with CFG."""

    prompt_embeds: Tensor
    pooled: Tensor
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
    """What the sampler needs from a flow-matching text-to-image model."""

    transformer: torch.nn.Module

    def encode(self, prompts: list[str], *, cfg: bool, negative_prompt: str = "") -> Conditioning: ...

    def prepare(self, height: int, width: int) -> None:
        """Set up per-resolution state (e.g. Flux image position ids) before velocity() calls."""
        ...

    def initial_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None) -> Tensor: ...

    def sigmas(self, num_steps: int, height: int, width: int) -> Tensor: ...

    def velocity(self, latents: Tensor, sigma: Tensor, cond: Conditioning, *, guidance_scale: float, detach_uncond: bool = False) -> Tensor: ...

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor: ...


def _guided(v_uncond: Tensor, v_cond: Tensor, w: float, detach_uncond: bool) -> Tensor:
    """Classifier-free guidance v = v_u + w·(v_c − v_u)."""
    if detach_uncond:
        v_uncond = v_uncond.detach()
    return v_uncond + w * (v_cond - v_uncond)


class _PipelineAdapter:
    """Shared pieces: device/dtype bookkeeping, scheduler sigmas and VAE decoding."""

    def __init__(self, pipe, *, max_sequence_length: int | None = None):
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.max_sequence_length = max_sequence_length or getattr(pipe.tokenizer, "model_max_length", 77)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def prepare(self, height: int, width: int) -> None:
        """Nothing to prepare by default."""

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


def adapter_for(pipe, **kwargs) -> FlowModelAdapter:
    """Pick the adapter for a diffusers pipeline by class (SD3 family or Flux family)."""
    name = type(pipe).__name__
    if name.startswith("StableDiffusion3"):
        return SD3Adapter(pipe, **kwargs)
    if name.startswith("Flux"):
        return FluxAdapter(pipe, **kwargs)
    raise TypeError(f"no rollout adapter for {name}; supported: StableDiffusion3*Pipeline, Flux*Pipeline")
