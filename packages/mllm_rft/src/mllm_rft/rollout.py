"""Batched rollouts with per-token log-probs for image-text models, behind transformers' `generate` (mllm_rft.md §5).

    rollout = generate_with_logprobs(model, inputs, max_new_tokens=32, temperature=0.7, seed=0)
    rollout.completion_ids, rollout.completion_mask, rollout.logprobs      # (B, T), (B, T), (B, T) float32
    new_logprobs = sequence_logprobs(model, rollout, inputs)              # (B, T): the training-time path
    freeze_vision_tower(model)                                            # vision parameters -> requires_grad False

`inputs` is what a processor returns for a *left-padded* batch (`processor.tokenizer.padding_side = "left"`):
`input_ids`, `attention_mask` and, for Qwen2-VL / Qwen2.5-VL, `pixel_values`, `image_grid_thw` and `mm_token_type_ids`
(text 0, image 1, video 2; transformers 5 needs it to build the multimodal RoPE positions). The processor call stays
with the caller, so this module never loads a tokenizer or touches the hub.

Log-prob definition. For completion token o_t sampled at step t with raw logits z_t (float32, the model's output for
the last position at that step):

    logprob_t = log_softmax(z_t / τ)[o_t],      τ = temperature if do_sample else 1

In transformers 5, `generate(..., return_dict_in_generate=True)` exposes two per-step tensors
(`generation/utils.py`, `_sample`): `output_logits=True` gives `logits` = the raw next-token logits cast to float32
*before* any logits processor, and `output_scores=True` gives `scores` = the same logits *after* the processor chain
(temperature, top-k, top-p, repetition penalty, …), i.e. what `softmax` turns into the sampling distribution. We read
`logits` and divide by τ ourselves. With top_p = 1 and top_k off (our defaults) this *is* the sampling distribution;
with top-p/top-k truncation the sampler draws from a renormalised truncated distribution whose log-probs a
teacher-forced forward pass cannot reproduce, so — like TRL, verl and EasyR1 — we record the untruncated
temperature-scaled log-prob, which `sequence_logprobs` recomputes exactly (tested to 1e-5 on a tiny Qwen2-VL).

Left padding and positions. Batched decoding needs left padding. The fresh forward pass feeds prompt + completion with
attention mask [prompt mask, completion mask]; for Qwen2-VL the model computes its 3-D (M-RoPE) positions itself from
`input_ids`, `mm_token_type_ids`, `image_grid_thw` and the attention mask (pads skipped), which is what generation
used at prefill; decoded tokens continue 1-D from there. For text-only models we pass position ids
`cumsum(mask) - 1`, the rule `generate` applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Rollout",
    "completion_mask_from_eos",
    "freeze_vision_tower",
    "generate_with_logprobs",
    "media_token_ids",
    "sequence_logprobs",
    "vision_tower",
]

# Names under which transformers 5 image-text models keep their vision encoder, searched in order.
# Qwen2-VL / Qwen2.5-VL: `Qwen2VLForConditionalGeneration.model.visual` (`Qwen2VLModel.visual`).
# LLaVA-style: `.model.vision_tower`. Older layouts put them at the top level.
_VISION_ATTRS = ("model.visual", "visual", "model.vision_tower", "vision_tower", "model.vision_model", "vision_model")


@dataclass
class Rollout:
    """One batch of completions and their log-probs at generation time.

    prompt_ids       (B, P) long, left-padded prompt as fed to `generate`
    prompt_mask      (B, P) long, 1 on real prompt tokens
    completion_ids   (B, T) long, generated tokens; every position after the first EOS holds `pad_token_id`
    completion_mask  (B, T) long, 1 up to and including the first EOS, 0 after
    logprobs         (B, T) float32, log_softmax(z_t / τ)[o_t]; 0 where completion_mask is 0
    temperature      τ used in `logprobs` (1.0 for greedy decoding)
    entropy          (B, T) float32 entropy of softmax(z_t / τ), the distribution sampled from (top-p/top-k aside);
                     0 where completion_mask is 0; None when the rollout was not generated (e.g. fixed answers)
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logprobs: torch.Tensor
    temperature: float
    eos_token_id: tuple[int, ...]
    pad_token_id: int
    entropy: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) number of completion tokens counted by the loss (EOS included)."""
        return self.completion_mask.sum(-1)


def _as_tuple(ids: int | list[int] | tuple[int, ...] | torch.Tensor | None) -> tuple[int, ...]:
    if ids is None:
        return ()
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    if isinstance(ids, int):
        return (ids,)
    return tuple(int(i) for i in ids)


def completion_mask_from_eos(completion_ids: torch.Tensor, eos_token_id: tuple[int, ...]) -> torch.Tensor:
    """(B, T) long mask: 1 up to and including the first EOS of each row, 0 after (all 1 if no EOS)."""
    if not eos_token_id:
        return torch.ones_like(completion_ids)
    eos = torch.tensor(eos_token_id, device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos).long()
    # eos seen strictly before position t  ->  position t is after the first EOS
    seen_before = torch.cumsum(is_eos, dim=-1) - is_eos
    return (seen_before == 0).long()


def _check_left_padded(attention_mask: torch.Tensor) -> None:
    if not bool(attention_mask[:, -1].all()):
        raise ValueError(
            "prompts must be left-padded for batched generation (attention_mask[:, -1] must be all 1); "
            "set processor.tokenizer.padding_side = 'left'"
        )


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNGs for the block without disturbing the caller's global RNG state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _tensor_inputs(model_inputs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in model_inputs.items()}


@torch.no_grad()
def generate_with_logprobs(
    model: Any,
    inputs: Mapping[str, Any],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    do_sample: bool = True,
    seed: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    suppress_media_tokens: bool = True,
    **generate_kwargs: Any,
) -> Rollout:
    """Sample completions with `model.generate` and record log_softmax(z_t / τ)[o_t] once, at generation time.

    inputs: processor output for a left-padded batch (see module docstring); must hold `input_ids`, `attention_mask`.
    temperature τ > 0 scales the logits when `do_sample`; greedy decoding ignores it and log-probs use τ = 1.
    top_p / top_k truncate the *sampling* distribution only; recorded log-probs stay untruncated (module docstring).
    seed: when given, sampling runs under `torch.manual_seed(seed)` inside a forked RNG (same seed -> same rollout).
    eos_token_id / pad_token_id default to `model.generation_config`; pad falls back to the first EOS id.
    suppress_media_tokens: never sample the image / video / vision-start / vision-end tokens (`media_token_ids`): a
    completion holding one would be read as an image placeholder by the next forward pass and fail (an untrained
    tiny model does sample them). Like top-p, this shapes sampling only; recorded log-probs stay untruncated.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False for greedy")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise ValueError("inputs must contain 'input_ids' and 'attention_mask' (a left-padded processor batch)")

    gen_cfg = model.generation_config
    eos = _as_tuple(eos_token_id if eos_token_id is not None else gen_cfg.eos_token_id)
    if pad_token_id is None:
        pad_token_id = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else (eos[0] if eos else None)
    if pad_token_id is None:
        raise ValueError("no pad_token_id: pass pad_token_id or set model.generation_config.pad_token_id")

    device = next(model.parameters()).device
    model_inputs = _tensor_inputs(inputs, device)
    prompt_ids, prompt_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
    _check_left_padded(prompt_mask)

    sampling = (
        {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": top_k or 0}
        if do_sample
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    if suppress_media_tokens and media_token_ids(model):
        generate_kwargs.setdefault("suppress_tokens", media_token_ids(model))
    with _seeded(seed, device):
        out = model.generate(
            **model_inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(eos) if eos else None,
            pad_token_id=pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            **sampling,
            **generate_kwargs,
        )

    completion_ids = out.sequences[:, prompt_ids.shape[1] :]
    completion_mask = completion_mask_from_eos(completion_ids, eos)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, pad_token_id)

    tau = float(temperature) if do_sample else 1.0
    logits = torch.stack(out.logits, dim=1).float()  # (B, T, V) raw logits, before any processor
    log_probs = torch.log_softmax(logits / tau, dim=-1)
    logprobs = log_probs.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) * completion_mask
    entropy = -(log_probs.exp() * log_probs).sum(-1) * completion_mask
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask.long(),
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=logprobs,
        temperature=tau,
        eos_token_id=eos,
        pad_token_id=int(pad_token_id),
        entropy=entropy,
    )


def media_token_ids(model: Any) -> list[int]:
    """Ids of the image / video placeholder and vision start / end tokens named in the model's config."""
    config = model.config
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "image_token_index")
    ids = [getattr(config, n, None) for n in names]
    return sorted({int(i) for i in ids if isinstance(i, int) and i >= 0})


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[ids] in float32; logits (B, T, V), ids (B, T)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _uses_mrope(model: Any) -> bool:
    return hasattr(getattr(model, "model", None), "get_rope_index")


def sequence_logprobs(model: Any, rollout: Rollout, model_inputs: Mapping[str, Any]) -> torch.Tensor:
    """(B, T) log_softmax(z_t / τ)[o_t] from one teacher-forced forward pass over prompt + completion.

    The training-time path (π_θ in the ratio, π_ref for the KL): gradients flow unless the caller wraps it in
    `torch.no_grad()`. model_inputs: the same processor batch the rollout was generated from (pixel_values,
    image_grid_thw, mm_token_type_ids, … are passed through; input_ids / attention_mask are rebuilt here).
    Logits at position P-1+t predict completion token t. Positions with completion_mask 0 are set to 0.
    """
    device = next(model.parameters()).device
    extra = {k: v for k, v in _tensor_inputs(model_inputs, device).items() if k not in ("input_ids", "attention_mask")}
    prompt_ids, prompt_mask = rollout.prompt_ids.to(device), rollout.prompt_mask.to(device)
    completion_ids, completion_mask = rollout.completion_ids.to(device), rollout.completion_mask.to(device)
    P, T = prompt_ids.shape[1], completion_ids.shape[1]

    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    if "mm_token_type_ids" in extra:  # completions are text (type 0)
        tt = extra["mm_token_type_ids"]
        extra["mm_token_type_ids"] = torch.cat([tt, tt.new_zeros(tt.shape[0], T)], dim=1)
    if "token_type_ids" in extra:
        tt = extra["token_type_ids"]
        extra["token_type_ids"] = torch.cat([tt, tt.new_zeros(tt.shape[0], T)], dim=1)
    if not _uses_mrope(model) and "position_ids" not in extra:
        # text-only rule used by `generate`: positions count real tokens, pads get 0 (they are masked anyway)
        extra["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
    logits = out.logits[:, P - 1 : P - 1 + T, :]
    return _token_logprobs(logits / rollout.temperature, completion_ids) * completion_mask


def vision_tower(model: Any) -> torch.nn.Module:
    """The vision encoder module of an image-text model (Qwen2-VL / Qwen2.5-VL: `model.model.visual`)."""
    for path in _VISION_ATTRS:
        obj: Any = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.Module):
            return obj
    raise AttributeError(
        f"{type(model).__name__} has no vision tower: looked for {', '.join(_VISION_ATTRS)}; "
        "freeze_vision_tower needs an image-text model (e.g. Qwen2VLForConditionalGeneration)"
    )


def freeze_vision_tower(model: Any) -> torch.nn.Module:
    """Set requires_grad False on every vision-tower parameter (merger included); returns the tower.

    Qwen2-VL's `visual` holds the patch embedding, the ViT blocks and the patch merger that projects into the LLM
    width; all are frozen. Raises AttributeError with the searched names when the model has no vision tower.
    """
    tower = vision_tower(model)
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower
