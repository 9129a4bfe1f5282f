"""Prompts and batches: one chat turn per question, encoded by the model's own processor, left-padded.

    inputs = encode_prompts(processor, samples)            # the batch `rollout.generate_with_logprobs` takes
    rollout = completions_as_rollout(processor, inputs, ["<think>…</think><answer>2</answer>", …])   # SFT / eval
    texts = decode_completions(processor, rollout)         # tags kept (card §5)

The question is followed by R1-V's instruction (card §3: the R1 template, `<think>…</think><answer>…</answer>`) and
sent through `processor.apply_chat_template`, so Qwen2-VL / Qwen2.5-VL checkpoints get their own chat format and the
tiny model gets the same ChatML layout (`mllm_rft.tiny.CHAT_TEMPLATE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mllm_rft.rollout import Rollout
from mllm_rft.tasks import Sample

__all__ = ["INSTRUCTION", "chat_text", "completions_as_rollout", "decode_completions", "encode_prompts"]

# R1-V's question suffix (its `QUESTION_TEMPLATE`), the format reward's template.
INSTRUCTION = "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."


def chat_text(processor: Any, question: str, *, instruction: str = INSTRUCTION) -> str:
    """The prompt string for one image + question, ending with the assistant turn's opening."""
    text = f"{question} {instruction}" if instruction else question
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(processor: Any, samples: Sequence[Sample], *, instruction: str = INSTRUCTION) -> dict[str, Any]:
    """Left-padded processor batch (input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)."""
    if not samples:
        raise ValueError("encode_prompts needs at least one sample")
    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        texts = [chat_text(processor, s.question, instruction=instruction) for s in samples]
        images = [s.image.convert("RGB") for s in samples]
        batch = processor(text=texts, images=images, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    return dict(batch)


def completions_as_rollout(processor: Any, inputs: dict[str, Any], completions: Sequence[str]) -> Rollout:
    """A `Rollout` holding given completion texts (each followed by EOS), right-padded, log-probs zero.

    Lets supervised fine-tuning and scoring of fixed answers use the training-time path
    (`rollout.sequence_logprobs`): loss = −Σ m·log π(o_t) over the completion tokens only.
    """
    tok = processor.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    if len(completions) != inputs["input_ids"].shape[0]:
        raise ValueError(f"{len(completions)} completions for a batch of {inputs['input_ids'].shape[0]} prompts")
    rows = [tok(c, add_special_tokens=False)["input_ids"] + [eos] for c in completions]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return Rollout(
        prompt_ids=inputs["input_ids"], prompt_mask=inputs["attention_mask"].long(), completion_ids=ids,
        completion_mask=mask, logprobs=torch.zeros(ids.shape), temperature=1.0, eos_token_id=(eos,),
        pad_token_id=pad,
    )


def decode_completions(processor: Any, rollout: Rollout) -> list[str]:
    """Completion texts up to (not including) the first EOS. Special tokens are dropped by id, never by
    `skip_special_tokens` on the string, so the ordinary-text tags `<think>` / `<answer>` survive."""
    tok = processor.tokenizer
    special = set(tok.all_special_ids) | set(rollout.eos_token_id) | {rollout.pad_token_id}
    out = []
    for ids, m in zip(rollout.completion_ids.tolist(), rollout.completion_mask.tolist()):
        kept = [t for t, keep in zip(ids, m) if keep and t not in special]
        out.append(tok.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return out
