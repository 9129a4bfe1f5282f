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
the first sample of each question. When the gold answers take few values (counting's 1–3, yes/no) `answers` breaks
the result down per gold value: how often the model is right on those questions, and how often it gives that value
at all, which shows a policy that has collapsed onto a few answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mllm_rft.prompts import decode_completions, encode_prompts
from mllm_rft.rewards import extract_answer, format_reward, normalize_text
from mllm_rft.rollout import generate_with_logprobs
from mllm_rft.tasks import Sample, verify

__all__ = ["EvalResult", "answer_breakdown", "evaluate", "save_examples"]

MAX_ANSWER_VALUES = 12


@dataclass
class EvalResult:
    accuracy: float
    format_rate: float
    mean_length: float
    scores: list[float] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    answers: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "format_rate": self.format_rate, "length": self.mean_length}

    def summary(self) -> dict[str, Any]:
        """as_dict() plus the per-gold-answer breakdown (when there is one), for eval.json."""
        return {**self.as_dict(), **({"answers": self.answers} if self.answers else {})}

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
    return EvalResult(sum(scores) / n, sum(fmt) / n, sum(lengths) / n, scores[::k], completions[::k],
                      answer_breakdown(samples, completions, scores))


def answer_breakdown(samples: Sequence[Sample], completions: Sequence[str], scores: Sequence[float]
                     ) -> dict[str, dict[str, float]]:
    """{gold value: {"questions": share of completions whose gold answer is it, "accuracy": mean score on them,
    "answered": share of all completions answering it}}; empty when the gold answers take more than
    MAX_ANSWER_VALUES values (boxes, free text). Answers are compared after `exact_match`'s normalisation."""
    golds = sorted({s.answer for s in samples}, key=lambda a: (len(a), a))
    if not samples or len(golds) > MAX_ANSWER_VALUES:
        return {}
    given = [normalize_text(extract_answer(c) or "") for c in completions]
    n = len(samples)
    out = {}
    for g in golds:
        mine = [sc for s, sc in zip(samples, scores) if s.answer == g]
        out[g] = {"questions": len(mine) / n, "accuracy": sum(mine) / len(mine),
                  "answered": given.count(normalize_text(g)) / n}
    return out


def save_examples(samples: Sequence[Sample], result: EvalResult, path: str | Path, *, scale: int = 3) -> Path:
    """A grid of the images with question, completion's answer and score under each (wrapped captions)."""
    from shared.imaging import save_image_grid

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
