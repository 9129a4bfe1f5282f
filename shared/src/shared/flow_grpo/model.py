"""Build the policy: load the pipeline, choose what trains (full fine-tune or LoRA), precision and checkpointing.

* Full fine-tune (``lora.rank = 0``): every transformer parameter trains, kept in float32 (autocast handles
  bf16/fp16 compute); text encoders and VAE are frozen. The reference (KL, hybrid evaluation) is a frozen copy
  of the initial transformer.
* LoRA (``lora.rank > 0``, needs ``peft``): diffusers' ``add_adapter`` with a ``peft.LoraConfig`` (Gaussian
  init, so the adapter starts as the identity); with mixed precision the frozen weights are cast to the compute
  dtype and the LoRA weights stay float32, as Flow-GRPO does. The reference is the same network with its
  adapter disabled (:class:`shared.flow_grpo.objective.Reference`).
* ``sample.schedule = "dance"`` replaces the pipeline's sigmas by DanceGRPO's shift schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.rollout import FlowModelAdapter, SamplerConfig, adapter_for

__all__ = ["Policy", "build_policy", "sampler_config"]

_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Policy:
    pipe: object
    adapter: FlowModelAdapter
    params: list[torch.nn.Parameter]
    names: list[str]
    lora: bool
    resolution: int

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} trained tensors, e.g. {missing[:3]}; "
                             "was it written with another lora / model setting?")
        with torch.no_grad():
            for n, p in zip(self.names, self.params, strict=True):
                p.copy_(state[n])


def build_policy(cfg, device: torch.device, *, pipeline=None) -> Policy:
    """Policy from ``cfg`` (a RunConfig); ``pipeline`` replaces loading ``cfg.model.path`` (tests, notebooks)."""
    if pipeline is None:
        from shared.demo import resolve_model
        from shared.rollout.loading import load_pipeline

        pipeline = load_pipeline(resolve_model(cfg.model.path), torch_dtype=torch.float32)
    pipe = pipeline
    pipe.set_progress_bar_config(disable=True)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False).eval()
    transformer = pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet  # SD 1.x: UNet
    lora = cfg.lora.rank > 0
    compute = _DTYPES[cfg.model.mixed_precision] if device.type == "cuda" else torch.float32
    if lora:
        from peft import LoraConfig as PeftLoraConfig

        pipe.to(device=device, dtype=compute)
        transformer.requires_grad_(False)
        transformer.add_adapter(PeftLoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha or cfg.lora.rank,
                                               init_lora_weights="gaussian", target_modules=list(cfg.lora.targets)))
        for p in transformer.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    else:
        pipe.to(device=device)
        if any(p.dtype != torch.float32 for p in transformer.parameters()):
            transformer.to(torch.float32)
        transformer.requires_grad_(True)
    if cfg.model.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    named = [(n, p) for n, p in transformer.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("no trainable parameter: check lora.targets against the transformer's module names")
    adapter = adapter_for(pipe)
    if cfg.sample.schedule == "dance":
        from shared.schedules import dance_sigmas

        adapter.sigmas = lambda num_steps, height, width: dance_sigmas(num_steps, cfg.sample.shift)
    native = int(getattr(pipe, "default_sample_size", 64)) * adapter.vae_scale_factor
    return Policy(pipe, adapter, [p for _, p in named], [n for n, _ in named], lora,
                  cfg.sample.resolution or native)


def sampler_config(cfg, policy: Policy, micro_batch_size: int, *, ode: bool = False) -> SamplerConfig:
    """The rollout SamplerConfig (``ode=True``: noise 0 with the evaluation steps and guidance)."""
    s, r = cfg.sample, cfg.run
    return SamplerConfig(
        num_steps=r.eval_steps if ode else s.num_steps,
        kind=s.kind,
        noise_level=0.0 if ode else s.noise_level,
        guidance_scale=(r.eval_guidance or s.guidance_scale) if ode else s.guidance_scale,
        negative_prompt=s.negative_prompt,
        height=policy.resolution,
        width=policy.resolution,
        micro_batch_size=micro_batch_size,
        same_noise_per_group=s.same_noise_per_group and not ode,
        detach_uncond=s.detach_uncond,
        sde_steps=None if ode or not s.sde_steps else tuple(sorted(set(s.sde_steps))),
    )
