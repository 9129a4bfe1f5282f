"""Supervised fine-tuning on reference completions: the stage that makes the tiny VLM competent enough for GRPO
to improve (card §5; R1-V and VLM-R1 start from instruction-tuned checkpoints that already follow the format).

    text = reference_completion(sample)   # "<think>red circle, red circle</think><answer>2</answer>"
    summary = run_sft(load_config(SFTConfig, preset="shapes"))

Reference "reasoning" is read off the drawn scene (ours): counting lists the counted objects, attribute and spatial
state the fact, grounding names the object. The loss is the token mean of −log π(o_t) over completion tokens
(prompt and image tokens carry no loss), computed by `rollout.sequence_logprobs`, the same teacher-forced path the
GRPO loss uses.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mllm_rft.config import SFTConfig
from mllm_rft.prompts import INSTRUCTION, completions_as_rollout, encode_prompts
from mllm_rft.rollout import sequence_logprobs
from mllm_rft.tasks import Sample, make_split

__all__ = ["reference_completion", "run_sft", "sft_loss", "tokenizer_corpus"]

_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _think(sample: Sample) -> str:
    m = sample.meta
    if sample.task.startswith("counting"):
        shown = [f"{o['color']} {o['class']}" for o in m["objects"]
                 if o["class"] == m["shape"] and m["color"] in (None, o["color"])]
        return ", ".join(shown) if shown else "none"
    if sample.task == "attribute":
        shape, color = m["query"]
        return f"the {shape} is {color}" if m["asked"] == "color" else f"the {color} object is a {shape}"
    if sample.task == "spatial":
        (sa, ca), (sb, cb) = m["a"], m["b"]
        rel = m["relation"]
        if m["kind"] == "yes_no" and sample.answer == "no":
            rel = _OPPOSITE[rel]
        return f"the {ca} {sa} is {rel} the {cb} {sb}"
    if sample.task == "grounding":
        shape, color = m["query"]
        return f"the {color} {shape}"
    return ""


def reference_completion(sample: Sample) -> str:
    """The R1-format target for `sample`: `<think>{facts}</think><answer>{gold answer}</answer>`."""
    return f"<think>{_think(sample)}</think><answer>{sample.answer}</answer>"


def tokenizer_corpus(samples: Sequence[Sample]) -> Iterator[str]:
    """Texts the tiny tokenizer is trained on: every question with the instruction, every reference completion,
    and the numbers a box can hold."""
    for s in samples:
        yield f"{s.question} {INSTRUCTION}"
        yield reference_completion(s)
    yield " ".join(str(i) for i in range(257))


def sft_loss(model: Any, processor: Any, samples: Sequence[Sample], completions: Sequence[str]) -> torch.Tensor:
    """Token mean of −log π(o_t) over the completion tokens (EOS included) of `completions`."""
    inputs = encode_prompts(processor, samples)
    rollout = completions_as_rollout(processor, inputs, completions)
    logp = sequence_logprobs(model, rollout, inputs)
    m = rollout.completion_mask.to(logp.device, logp.dtype)
    return -(logp * m).sum() / m.sum()


def _build(cfg: SFTConfig, train: list[Sample]) -> tuple[Any, Any]:
    from mllm_rft.tiny import TinyVLMConfig, build_model, build_processor, train_tokenizer

    if cfg.model.path:
        from mllm_rft.models import load_vlm

        return load_vlm(cfg.model.path, dtype="float32")
    tok = train_tokenizer(tokenizer_corpus(train), vocab_size=cfg.model.vocab_size)
    m = cfg.model
    tiny = TinyVLMConfig(hidden_size=m.hidden_size, intermediate_size=m.intermediate_size, num_layers=m.num_layers,
                         num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, vision_depth=m.vision_depth,
                         vision_embed_dim=m.vision_embed_dim, patch_size=m.patch_size)
    processor = build_processor(tok, image_size=cfg.data.image_size, patch_size=m.patch_size)
    return build_model(tok, tiny, seed=cfg.train.seed), processor


def _lr_lambda(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Train, evaluate greedily on each task's test and OOD split, save model + processor + sft.json to cfg.out."""
    from mllm_rft.evaluate import evaluate

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = cfg.data
    kw = dict(seed=d.seed, image_size=d.image_size, max_distractors=d.max_distractors)
    train = [s for t in d.tasks for s in make_split(t, "train", d.train_size, **kw)]
    model, processor = _build(cfg, train)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_lambda(s, cfg.train.warmup, cfg.train.steps))
    rng = np.random.default_rng(cfg.train.seed)
    order = rng.permutation(len(train))
    pos, losses, t0 = 0, [], time.time()
    steps = range(cfg.train.steps)
    if cfg.progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sft")
    for step in steps:
        if pos + cfg.train.batch_size > len(order):
            order, pos = rng.permutation(len(train)), 0
        batch = [train[i] for i in order[pos: pos + cfg.train.batch_size]]
        pos += cfg.train.batch_size
        loss = sft_loss(model, processor, batch, [reference_completion(s) for s in batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if cfg.progress and step % 20 == 0:
            steps.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    train_time = time.time() - t0

    model.eval()
    summary: dict[str, Any] = {"steps": cfg.train.steps, "final_loss": float(np.mean(losses[-50:])),
                               "train_seconds": round(train_time, 1),
                               "parameters": sum(p.numel() for p in model.parameters())}
    for task in d.tasks:
        for split, n in (("test", d.test_size), ("ood", d.ood_size)):
            if n == 0:
                continue
            res = evaluate(model, processor, make_split(task, split, n, **kw), batch_size=cfg.eval_batch_size,
                           max_new_tokens=cfg.max_new_tokens)
            summary[f"{task}/{split}"] = res.as_dict()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    from shared.training import to_dict

    (out / "sft.json").write_text(json.dumps({"config": to_dict(cfg), "result": summary}, indent=2))
    (out / "losses.json").write_text(json.dumps([round(x, 5) for x in losses]))
    return summary
