"""The shapes-world reward: the exact verifier as an RL reward (shared_core.md §10–11).

    r = 1.0 if verify(image, record).correct else 0.0                  (default, GenEval's binary correctness)
    r = satisfied conditions / all conditions                          (partial_credit=True)
    r = the same with an include count credited min(found, n)/n       (partial_credit=True, graded_counts=True)

Conditions are one per include count, colour and position and one per exclude (`shared.shapes.verify`); a record
whose include count fails also fails its colour/position conditions. [our reading]
The record comes from `metadata[i]` when it is a GenEval record (has "include"; keys other than GenEval's are
ignored), else from parsing `prompts[i]` (text outside the grammar raises `PromptFileError` naming it).
"""

from __future__ import annotations

import torch

from shared.rewards.base import check_batch, tensor_to_uint8
from shared.rewards.registry import register_reward
from shared.shapes.prompts import as_record, parse_prompt
from shared.shapes.verify import VerifyResult, verify

_GENEVAL_KEYS = ("tag", "include", "exclude", "prompt")


@register_reward("shapes")
class ShapesReward:
    name = "shapes"

    def __init__(self, partial_credit: bool = False, graded_counts: bool = False, **verify_kwargs):
        if graded_counts and not partial_credit:
            raise ValueError("shapes reward: graded_counts=True grades the partial credit; also set partial_credit=True")
        self.partial_credit = bool(partial_credit)
        self.graded_counts = bool(graded_counts)
        self.verify_kwargs = verify_kwargs

    def records(self, prompts: list[str], metadata: list[dict] | None = None) -> list[dict]:
        out = []
        for i, prompt in enumerate(prompts):
            md = metadata[i] if metadata is not None else None
            if isinstance(md, dict) and "include" in md:
                out.append(as_record({k: md[k] for k in _GENEVAL_KEYS if k in md}))
            else:
                out.append(parse_prompt(prompt))
        return out

    def evaluate(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None
    ) -> list[VerifyResult]:
        """Full verifier results (reasons, detected objects) for logging."""
        check_batch(images, prompts, metadata)
        arrays = tensor_to_uint8(images)
        return [verify(a, r, **self.verify_kwargs) for a, r in zip(arrays, self.records(prompts, metadata))]

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        results = self.evaluate(images, prompts, metadata)
        if self.graded_counts:
            vals = [float(r.details["graded_score"]) for r in results]
        else:
            vals = [r.score if self.partial_credit else float(r.correct) for r in results]
        return torch.tensor(vals, dtype=torch.float32)
