"""Greedy evaluation on a list of questions: accuracy, format rate, response length, and rendered examples.

    result = evaluate(model, processor, samples, batch_size=150, max_new_tokens=48)
    result.accuracy, result.format_rate, result.mean_length, result.completions
    sampled = evaluate(model, processor, samples, num_samples=8, temperature=1.0, seed=0)   # avg@8 at τ = 1
    save_examples(samples[:8], result, "examples_test.png")

Accuracy is the task's verifier (`tasks.verify`: count, label, exact match, IoU …), averaged over questions; it
reads the content of the last `<answer>…</answer>`, so a completion without one scores 0. Decoding is greedy by
default, batched and left-padded through the same `generate_with_logprobs` the rollouts use. With `num_samples`
k ≥ 1 it samples k completions per question at `temperature` and averages over all of them (avg@k, DAPO's AIME
metric: the accuracy of the policy that GRPO trains, rather than of its mode); `scores` / `completions` then hold
the first sample of each question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mllm_rft.prompts import decode_completions, encode_prompts
from mllm_rft.rewards import format_reward
from mllm_rft.rollout import generate_with_logprobs
from mllm_rft.tasks import Sample, verify

__all__ = ["EvalResult", "evaluate", "save_examples"]


@dataclass
class EvalResult:
    accuracy: float
    format_rate: float
    mean_length: float
    scores: list[float] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "format_rate": self.format_rate, "length": self.mean_length}

    def metrics(self, prefix: str) -> dict[str, float]:
        """{prefix/accuracy, prefix/format_rate, prefix/length} for the metrics log."""
        return {f"{prefix}/{k}": v for k, v in self.as_dict().items()}


@torch.no_grad()
def evaluate(model: Any, processor: Any, samples: Sequence[Sample], *, batch_size: int = 150,
             max_new_tokens: int = 48, num_samples: int = 0, temperature: float = 1.0, seed: int = 0,
             progress: bool = False) -> EvalResult:
    """Greedy (num_samples 0) or avg@k sampled completions for `samples`, scored by their verifiers."""
    if not samples:
        return EvalResult(float("nan"), float("nan"), float("nan"))
    k = max(1, num_samples)
    questions = list(samples)
    samples = [s for s in questions for _ in range(k)]
    was_training = model.training
    model.eval()
    completions: list[str] = []
    lengths: list[int] = []
    starts = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="eval", leave=False)
    for i in starts:
        chunk = samples[i: i + batch_size]
        inputs = encode_prompts(processor, chunk)
        if num_samples:
            rollout = generate_with_logprobs(model, inputs, max_new_tokens=max_new_tokens, temperature=temperature,
                                             seed=seed + i)
        else:
            rollout = generate_with_logprobs(model, inputs, max_new_tokens=max_new_tokens, do_sample=False)
        completions += decode_completions(processor, rollout)
        lengths += rollout.lengths.tolist()
    model.train(was_training)
    scores = [verify(s, c) for s, c in zip(samples, completions)]
    fmt = [format_reward(c) for c in completions]
    n = len(samples)
    return EvalResult(sum(scores) / n, sum(fmt) / n, sum(lengths) / n, scores[::k], completions[::k])


def save_examples(samples: Sequence[Sample], result: EvalResult, path: str | Path, *, scale: int = 3) -> Path:
    """A grid of the images with question, completion's answer and score under each (wrapped captions)."""
    from shared.imaging import save_image_grid

    from mllm_rft.rewards import extract_answer

    captions = []
    for s, c, score in zip(samples, result.completions, result.scores):
        answer = extract_answer(c)
        mark = "ok" if score >= 1 else ("x" if score <= 0 else f"{score:.2f}")
        captions.append(f"{s.question}\nmodel: {answer if answer is not None else '(no answer)'} [{mark}]"
                        f"\ngold: {s.answer}")
    n = len(captions)
    save_image_grid([s.image.convert("RGB") for s in samples[:n]], path, captions=captions, scale=scale,
                    nrow=min(4, n), max_caption_lines=6)
    return Path(path)
