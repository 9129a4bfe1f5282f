"""GenEval-style scores: per-image correctness → per-tag means → overall (shared_core.md §11).

GenEval's summary [authors' code: `djghosh13/geneval` `evaluation/summary_scores.py`]: % correct images, % correct
prompts (a prompt counts if any of its images is correct; prompts are grouped by their metadata), per-tag mean
correctness, and the overall score = the mean of the per-tag means (tags present in the results; all six for a full
evaluation set), so each tag weighs the same whatever its number of prompts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from shared.shapes.prompts import as_record
from shared.shapes.verify import verify
from shared.shapes.vocab import TAGS


def summarize(results: Iterable[dict]) -> dict:
    """Summary of result rows (each with `tag`, `correct`, and `metadata` or `prompt`).

    Returns {"total_images", "total_prompts", "correct_images", "correct_prompts", "per_tag": {tag: mean},
    "per_tag_counts": {tag: [n_correct, n]}, "overall"}; tags in GenEval's order, unknown tags after them.
    """
    rows = list(results)
    if not rows:
        raise ValueError("summarize needs at least one result row")
    per_tag: dict[str, list[bool]] = {}
    per_prompt: dict[str, bool] = {}
    for row in rows:
        ok = bool(row["correct"])
        per_tag.setdefault(row["tag"], []).append(ok)
        key = row.get("metadata")
        if key is None:
            key = row["prompt"]
        elif not isinstance(key, str):
            key = json.dumps(key, sort_keys=True)
        per_prompt[key] = per_prompt.get(key, False) or ok
    order = [t for t in TAGS if t in per_tag] + sorted(t for t in per_tag if t not in TAGS)
    means = {t: float(np.mean(per_tag[t])) for t in order}
    return {
        "total_images": len(rows),
        "total_prompts": len(per_prompt),
        "correct_images": float(np.mean([bool(r["correct"]) for r in rows])),
        "correct_prompts": float(np.mean(list(per_prompt.values()))),
        "per_tag": means,
        "per_tag_counts": {t: [int(sum(per_tag[t])), len(per_tag[t])] for t in order},
        "overall": float(np.mean(list(means.values()))),
    }


def _split_batch(images) -> list:
    """A list of images, or a batch (torch B×3×H×W, numpy B×H×W×3) split into single images."""
    if isinstance(images, (list, tuple)):
        return list(images)
    ndim = getattr(images, "ndim", None)
    if ndim == 4:
        return [images[i] for i in range(images.shape[0])]
    raise ValueError("images must be a list of images or a 4-D batch (torch B×3×H×W or numpy B×H×W×3)")


def geneval_score(images, records: Sequence[str | dict], **verify_kwargs) -> dict:
    """Verify image i against record (or prompt) i and summarise (`summarize`); adds "results": one row per image
    with `tag`, `prompt`, `correct`, `reason`, `score` (partial credit)."""
    imgs = _split_batch(images)
    if len(imgs) != len(records):
        raise ValueError(f"{len(imgs)} images for {len(records)} records")
    rows = []
    for im, rec in zip(imgs, records):
        rec = as_record(rec)
        res = verify(im, rec, **verify_kwargs)
        rows.append(
            {
                "tag": rec["tag"],
                "prompt": rec["prompt"],
                "metadata": json.dumps(rec),
                "correct": res.correct,
                "reason": res.reason,
                "score": res.score,
            }
        )
    summary = summarize(rows)
    summary["results"] = rows
    return summary
