"""The tiny Qwen2-VL: tokenizer, processor, chat prompts, save / load through the Auto classes, size budget."""

from __future__ import annotations

import torch

from mllm_rft.models import load_vlm, resolve_dtype
from mllm_rft.prompts import INSTRUCTION, completions_as_rollout, decode_completions, encode_prompts
from mllm_rft.rollout import generate_with_logprobs, sequence_logprobs
from mllm_rft.tasks import make_split
from mllm_rft.tiny import IMAGE_PAD, SPECIAL_TOKENS, TinyVLMConfig, build_model, build_processor, train_tokenizer


def test_tokenizer_round_trips_and_keeps_tags_as_text():
    tok = train_tokenizer(["<think>red circle</think><answer>2</answer>", "How many circles?"], vocab_size=300)
    text = "<think>two blue squares, é ✓</think><answer>[1, 2, 30, 40]</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: unseen characters survive
    # the tags are ordinary text: skip_special_tokens leaves them (card §5), but drops the real specials
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode([tok.eos_token_id], skip_special_tokens=True) == ""
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert all(tok.convert_tokens_to_ids(t) < len(SPECIAL_TOKENS) for t in SPECIAL_TOKENS)


def test_prompt_expands_one_image_into_merged_patch_tokens(tiny_vlm_dir):
    model, processor = load_vlm(tiny_vlm_dir)
    samples = make_split("counting", "test", 3, seed=0, image_size=32)
    batch = encode_prompts(processor, samples)
    n_img = (batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)).sum(-1)
    assert n_img.tolist() == [(32 // 8) ** 2 // 4] * 3  # 4x4 patches of 8 px merged 2x2 -> 4 tokens
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 3
    assert bool(batch["attention_mask"][:, -1].all())  # left-padded
    text = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert samples[0].question in text and INSTRUCTION in text and text.endswith("<|im_start|>assistant\n")
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD))


def test_fixed_completions_round_trip(tiny_vlm_dir):
    _, processor = load_vlm(tiny_vlm_dir)
    samples = make_split("attribute", "test", 4, seed=1, image_size=32)
    inputs = encode_prompts(processor, samples)
    texts = ["<think>a</think><answer>red</answer>", "<answer>circle</answer>", "x", "<think></think>"]
    r = completions_as_rollout(processor, inputs, texts)
    assert decode_completions(processor, r) == texts
    assert r.completion_mask.sum(-1).tolist() == [len(processor.tokenizer(t)["input_ids"]) + 1 for t in texts]


def test_save_load_gives_identical_outputs(tiny_vlm_dir, tmp_path):
    model, processor = load_vlm(tiny_vlm_dir)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2, processor2 = load_vlm(tmp_path)
    samples = make_split("spatial", "test", 2, seed=2, image_size=32)
    a, b = encode_prompts(processor, samples), encode_prompts(processor2, samples)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = generate_with_logprobs(model, a, max_new_tokens=5, seed=3)
    rb = generate_with_logprobs(model2, b, max_new_tokens=5, seed=3)
    assert torch.equal(ra.completion_ids, rb.completion_ids)
    torch.testing.assert_close(ra.logprobs, rb.logprobs)


def test_default_tiny_model_fits_the_checkpoint_budget():
    tok = train_tokenizer(["a b c"], vocab_size=640)
    model = build_model(tok, TinyVLMConfig())
    mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    assert mb < 20, mb  # issue 8: the committed SFT checkpoint is at most 20 MB
    proc = build_processor(tok, image_size=64)
    assert proc.image_processor.patch_size == 8


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
