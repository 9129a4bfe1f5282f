"""A tiny Qwen2-VL for the offline shapes world: tokenizer trained offline, model built from a small config
(mllm_rft.md §5: "a tiny Qwen2-VL from config with an offline byte-level BPE tokenizer").

    tokenizer = train_tokenizer(texts, vocab_size=640)
    processor = build_processor(tokenizer, image_size=64)
    model = build_model(tokenizer, TinyVLMConfig(), seed=0)
    model.save_pretrained(d); processor.save_pretrained(d)      # loads back with load_vlm(d), like a real Qwen2-VL

Everything is a stock transformers class (`Qwen2VLForConditionalGeneration`, `Qwen2VLProcessor`,
`Qwen2VLImageProcessor`, `PreTrainedTokenizerFast`), so the training code cannot tell the tiny model from
Qwen2-VL-2B: same chat template, same special tokens, same image-token expansion and M-RoPE positions.

The tags `<think>`, `</think>`, `<answer>`, `</answer>` are ordinary text, never special tokens (card §5: decoding
with `skip_special_tokens=True` would delete them and zero the format reward).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TinyVLMConfig",
    "build_model",
    "build_processor",
    "train_tokenizer",
]

# Qwen2-VL's special tokens, same strings, so prompts and the image-token expansion match the real models.
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# Qwen2-VL's ChatML template reduced to what the shapes tasks use: one user turn of images and text, no system
# prompt (the real checkpoints' templates add "You are a helpful assistant."; the tiny model never saw it).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 640) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 / Qwen2 style) trained on `texts`, with Qwen2-VL's special tokens.

    Pad is `<|endoftext|>`, EOS `<|im_end|>` (Qwen2-VL-Instruct's generation EOS). Byte-level: any string
    round-trips, including characters never seen in training.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=IM_END, padding_side="left",
        extra_special_tokens={"image_token": IMAGE_PAD, "video_token": VIDEO_PAD,
                              "vision_start_token": VISION_START, "vision_end_token": VISION_END},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast, *, image_size: int = 64, patch_size: int = 8,
                    merge_size: int = 2) -> Qwen2VLProcessor:
    """Qwen2-VL processor for square `image_size` images: (image_size / patch_size)² patches,
    merged 2×2 into (image_size / (patch_size · merge_size))² image tokens (64 px, patch 8 → 16 tokens)."""
    factor = patch_size * merge_size
    if image_size % factor:
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size·merge_size = {factor}")
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2, min_pixels=pixels, max_pixels=pixels,
    )
    # Qwen2VLProcessor requires a video processor; the shapes tasks never send video.
    video_processor = Qwen2VLVideoProcessor(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)


@dataclass(frozen=True)
class TinyVLMConfig:
    """Sizes of the tiny Qwen2-VL. Defaults: about 1.6 M parameters, 6.5 MB in float32."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_heads: int = 4
    patch_size: int = 8
    merge_size: int = 2
    max_position_embeddings: int = 512


def build_model(tokenizer: PreTrainedTokenizerFast, cfg: TinyVLMConfig = TinyVLMConfig(), *,
                seed: int = 0) -> Qwen2VLForConditionalGeneration:
    """A randomly initialised `Qwen2VLForConditionalGeneration` sized by `cfg`, token ids from `tokenizer`."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = cfg.hidden_size // cfg.num_heads
    # M-RoPE splits head_dim / 2 rotary frequencies over (time, height, width); Qwen2-VL uses [16, 24, 24] of 64.
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=cfg.vision_depth, embed_dim=cfg.vision_embed_dim, hidden_size=cfg.hidden_size,
            num_heads=cfg.vision_heads, mlp_ratio=2, patch_size=cfg.patch_size, spatial_merge_size=cfg.merge_size,
            temporal_patch_size=2, in_channels=3,
        ),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=ids[IM_START], eos_token_id=ids[IM_END], pad_token_id=ids[PAD], tie_word_embeddings=True,
        ),
        image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids[IM_END]
    model.generation_config.pad_token_id = ids[PAD]
    model.generation_config.bos_token_id = ids[IM_START]
    return model
