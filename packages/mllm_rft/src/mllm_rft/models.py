"""Loading a policy from a local folder, LoRA, and the device / dtype rules (card §5).

    model, processor = load_vlm("assets/shapes_vlm", dtype="auto", device="cpu")   # any AutoModelForImageTextToText
    model = add_lora(model, rank=8, alpha=16, targets=["q_proj", "v_proj"])          # language model only

No hub ids: `path` must be a folder in save_pretrained layout (a downloaded Qwen2-VL-2B-Instruct, Qwen2.5-VL-7B-
Instruct, or `mllm-rft sft`'s output). dtype "auto" is bfloat16 on CUDA and float32 on CPU (card §5: TRL's bf16 default
fails on CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mllm_rft.rollout import vision_tower

__all__ = ["add_lora", "load_vlm", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """`auto` → bfloat16 on CUDA, float32 elsewhere; otherwise the named dtype."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def load_vlm(path: str | Path, *, dtype: str = "auto", device: str | torch.device = "cpu",
             attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """(model, processor) from a local folder; the processor's tokenizer pads on the left."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from shared.demo import resolve_model

    folder = resolve_model(path, rebuild="tools/train_shapes_vlm.py")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; model.path must be a save_pretrained folder")
    processor = AutoProcessor.from_pretrained(folder)
    if not hasattr(processor, "image_processor"):
        raise ValueError(f"{folder}: the processor ({type(processor).__name__}) takes no images; mllm_rft needs an "
                         "image-text model (Qwen2-VL, Qwen2.5-VL, or another AutoModelForImageTextToText)")
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(
        folder, dtype=resolve_dtype(dtype, device), attn_implementation=attn_implementation)
    return model.to(device), processor


def add_lora(model: Any, *, rank: int, alpha: int, dropout: float = 0.0, targets: list[str]) -> Any:
    """Wrap the language model's `targets` linear layers in PEFT LoRA adapters; the vision tower gets none.

    Only adapter weights stay trainable. `model.disable_adapter()` then gives the base policy, which is what the
    trainer uses as the KL reference with β > 0 (no second copy of the weights).
    """
    from peft import LoraConfig, get_peft_model

    tower = vision_tower(model)
    prefix = next(name for name, module in model.named_modules() if module is tower)
    modules = [name for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
               and not name.startswith(prefix + ".")]
    if not modules:
        raise ValueError(f"model.lora_targets={targets} matched no linear layer of the language model")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none")
    return get_peft_model(model, config)
