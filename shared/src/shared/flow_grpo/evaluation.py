"""Evaluation and pictures: ODE samples of fixed prompts, their reward, a GenEval-style score, grids and curves.

Evaluation samples a fixed prompt set with the deterministic sampler (noise 0, ``run.eval_steps``, guidance
``run.eval_guidance``; Flow-GRPO evaluates with the ODE too) from ``run.eval_seed``, so the numbers of two
iterations, or of two training seeds, differ only through the weights. On the shapes world the images are also
scored by the exact verifier (:func:`shared.shapes.geneval_score`: mean of the six tag means); for prompt files only
the reward is reported.

**Hybrid inference** (chunk_grpo.md §7; MixGRPO too): with a :class:`Hybrid`, the first ``trained_steps`` ODE
steps use the trained model and the rest the base model (GCPO: 30 of 50), to suppress reward-hacking artefacts
of the late, low-noise steps. Its metrics are prefixed ``eval_hybrid/``; the plain ones (``eval/``) are reported
beside them, since hybrid inference hides part of the trained model's behaviour (chunk_grpo.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from shared.rollout import FlowModelAdapter, sample

__all__ = ["Hybrid", "eval_records", "evaluate", "ode_images", "save_curves", "save_grid"]


@dataclass(frozen=True)
class Hybrid:
    """The first ``trained_steps`` sampling steps with the trained model, the rest with ``base`` (e.g.
    :attr:`shared.flow_grpo.objective.Reference.model`)."""

    base: FlowModelAdapter
    trained_steps: int


def eval_records(cfg, pool: list[dict]) -> list[dict]:
    """The fixed evaluation prompts: the shapes evaluation set (``run.eval_per_tag`` per tag of ``run.eval_tags``, or
    of ``prompts.tags`` when empty) or the first
    6 × ``run.eval_per_tag`` records of the prompt file."""
    if cfg.prompts.source == "shapes":
        from shared.shapes import eval_prompts

        return eval_prompts(per_tag=cfg.run.eval_per_tag, tags=cfg.run.eval_tags or cfg.prompts.tags or None)
    return pool[: 6 * cfg.run.eval_per_tag]


@torch.no_grad()
def ode_images(adapter, records: list[dict], sampler_cfg, *, seed: int, autocast,
               hybrid: Hybrid | None = None) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1], one per record, drawn with ``sampler_cfg`` from ``seed`` (hybrid if given)."""
    gen = torch.Generator().manual_seed(seed)
    switch = {} if hybrid is None else {"second_adapter": hybrid.base, "switch_step": hybrid.trained_steps}
    with autocast():
        traj = sample(adapter, [r["prompt"] for r in records], sampler_cfg, generator=gen, **switch)
    return traj.images.float().cpu()


def evaluate(adapter, records: list[dict], reward, sampler_cfg, *, seed: int, shapes: bool, autocast,
             hybrid: Hybrid | None = None) -> dict:
    """``<p>/reward_mean`` and, on the shapes world, ``<p>/geneval`` and ``<p>/<tag>``; p = eval, or eval_hybrid
    with ``hybrid``."""
    prefix = "eval" if hybrid is None else "eval_hybrid"
    images = ode_images(adapter, records, sampler_cfg, seed=seed, autocast=autocast, hybrid=hybrid)
    prompts = [r["prompt"] for r in records]
    out = {f"{prefix}/reward_mean": reward(images, prompts, records).float().mean().item()}
    if shapes:
        from shared.shapes import geneval_score

        summary = geneval_score(images, records)
        out[f"{prefix}/geneval"] = summary["overall"]
        out.update({f"{prefix}/{tag}": v for tag, v in summary["per_tag"].items()})
    return out


def save_grid(adapter, records: list[dict], sampler_cfg, path: Path, *, seed: int, autocast,
              hybrid: Hybrid | None = None) -> Path:
    """A captioned grid of one ODE sample (hybrid if given) per record."""
    from shared.training import save_image_grid

    images = ode_images(adapter, records, sampler_cfg, seed=seed, autocast=autocast, hybrid=hybrid)
    captions = [r["prompt"].removeprefix("a photo of ") for r in records]
    scale = max(1, 96 // images.shape[-1])  # tiny samples (32 px) upscaled so they can be judged by eye
    save_image_grid(images, path, captions=captions, scale=scale, nrow=6)
    return path


def save_curves(run_dir: Path) -> Path | None:
    """``reward_curve.png``: training reward mean ± std, and the eval score (plain and hybrid) when there is one."""
    from shared.training import plot_curves, read_metrics

    records = read_metrics(run_dir)
    if not any("reward_mean" in r for r in records):
        return None
    keys = ["reward_mean"]
    for prefix in ("eval", "eval_hybrid"):
        keys += [k for k in (f"{prefix}/geneval", f"{prefix}/reward_mean") if any(k in r for r in records)][:1]
    return plot_curves(records, keys, run_dir / "reward_curve.png", std_keys={"reward_mean": "reward_std"},
                       smooth=0.6)
