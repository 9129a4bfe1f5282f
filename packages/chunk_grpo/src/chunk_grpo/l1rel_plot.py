"""Measure a model's L1rel curve and show the chunks each chunking mode makes of it (chunk_grpo.md §5).

    chunk-grpo l1rel --model assets/shapes_base --out outputs/l1rel.png --prompts 16 --num-steps 8

Samples N shapes-world prompts (seeded) with the model's SDE sampler (flow_grpo SDE, noise a), computes
L1rel_k = mean|x_{k+1} − x_k| / mean|x_k| per step and prompt (Eq. 16, :func:`chunk_grpo.l1rel.l1rel`), and plots
the mean ± std over prompts with one band per chunking below it: ``fixed`` (``--sizes``), ``uniform``
(``--size``) and ``adaptive`` (our rule on the mean curve, ``--max-chunk/--min-chunk/--max-order``). The curve,
the per-prompt curves, the sigmas and the three chunkings are written as JSON beside the PNG (same name, .json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chunk_grpo import chunking
from chunk_grpo.l1rel import curve_stats, l1rel

__all__ = ["L1relReport", "measure", "plot", "run"]


@dataclass
class L1relReport:
    """Per-prompt curves (N, T) over all sampled transitions, their sigmas and the chunkings of the trained ones."""

    curves: torch.Tensor
    sigmas: torch.Tensor
    trained_steps: int
    chunkings: dict[str, list[int]] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        mean, std = curve_stats(self.curves)
        return {"num_steps": int(self.curves.shape[1]), "trained_steps": self.trained_steps,
                "num_prompts": int(self.curves.shape[0]), "sigmas": self.sigmas.tolist(), "mean": mean.tolist(),
                "std": std.tolist(), "per_prompt": self.curves.tolist(), "chunks": self.chunkings,
                "prompts": self.prompts}


@torch.no_grad()
def measure(pipe, *, prompts: int = 16, num_steps: int = 8, noise_level: float = 0.7, guidance_scale: float = 4.0,
            seed: int = 0, micro_batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, T) L1rel curves of N seeded shapes prompts sampled with the flow_grpo SDE, the (T+1,) sigmas, the prompts."""
    from shared.rollout import SamplerConfig, adapter_for, sample
    from shared.shapes import generate_prompts

    adapter = adapter_for(pipe)
    size = int(getattr(pipe, "default_sample_size", 64)) * adapter.vae_scale_factor
    cfg = SamplerConfig(num_steps=num_steps, kind="flow_grpo", noise_level=noise_level, guidance_scale=guidance_scale,
                        height=size, width=size, micro_batch_size=micro_batch_size)
    texts = [r["prompt"] for r in generate_prompts(prompts, seed=seed)]
    traj = sample(adapter, texts, cfg, generator=torch.Generator().manual_seed(seed), decode=False)
    return l1rel(traj.latents).cpu(), traj.sigmas.cpu(), texts


def plot(report: L1relReport, path: str | Path, *, title: str | None = None) -> Path:
    """Mean ± std of the curve against the step index, and one band of alternating chunks per chunking mode."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    mean, std = curve_stats(report.curves)
    steps = list(range(mean.numel()))
    rows = list(report.chunkings.items())
    fig = Figure(figsize=(7.5, 3.2 + 0.45 * len(rows)), dpi=100)
    heights = [4.0] + [0.6] * len(rows)
    axes = fig.subplots(1 + len(rows), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    axes = list(axes) if len(rows) else [axes]
    ax = axes[0]
    for curve in report.curves:
        ax.plot(steps, curve.tolist(), color="tab:blue", alpha=0.12, linewidth=0.8)
    ax.plot(steps, mean.tolist(), color="tab:blue", marker="o", markersize=3, label="mean over prompts")
    ax.fill_between(steps, (mean - std).tolist(), (mean + std).tolist(), color="tab:blue", alpha=0.25, label="± std")
    if report.trained_steps < mean.numel():
        ax.axvspan(report.trained_steps - 0.5, mean.numel() - 0.5, color="grey", alpha=0.15, label="not trained")
    ax.set_ylabel("L1rel")
    ax.set_title(title or f"L1rel over {report.curves.shape[0]} prompts (step 0 = highest noise)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    for row_ax, (name, sizes) in zip(axes[1:], rows, strict=True):
        start = 0
        for j, s in enumerate(sizes):
            row_ax.barh(0, s, left=start - 0.5, height=0.8, color="tab:orange" if j % 2 == 0 else "tab:green",
                        edgecolor="black", linewidth=0.6)
            row_ax.text(start - 0.5 + s / 2, 0, str(s), ha="center", va="center", fontsize=8)
            start += s
        row_ax.set_yticks([0])
        row_ax.set_yticklabels([name], fontsize=8)
        row_ax.set_ylim(-0.5, 0.5)
    axes[-1].set_xlabel("step k (σ_k → σ_{k+1})")
    axes[-1].set_xlim(-0.6, mean.numel() - 0.4)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def run(model: str | Path, out: str | Path, *, prompts: int = 16, num_steps: int = 8, noise_level: float = 0.7,
        guidance_scale: float = 4.0, seed: int = 0, sizes: tuple[int, ...] | list[int] = (2, 2, 4), size: int = 4,
        max_chunk: int = 4, min_chunk: int = 1, max_order: int = 3, drop_last: bool = False) -> L1relReport:
    """Load the pipeline in ``model``, measure, chunk the mean curve's trained part, write ``out`` (PNG) and its JSON.

    ``sizes`` (fixed; default the ``shapes`` preset's [2, 2, 4]) must sum to the trained transitions (``num_steps``,
    minus 1 with ``drop_last``).
    """
    from shared.demo import resolve_model
    from shared.rollout.loading import load_pipeline

    n = num_steps - 1 if drop_last else num_steps
    fixed_sizes = chunking.fixed(list(sizes), n)  # checked before any model is loaded
    pipe = load_pipeline(resolve_model(model), torch_dtype=torch.float32)
    if torch.cuda.is_available():
        pipe.to("cuda")
    curves, sigmas, texts = measure(pipe, prompts=prompts, num_steps=num_steps, noise_level=noise_level,
                                    guidance_scale=guidance_scale, seed=seed)
    mean, _ = curve_stats(curves[:, :n])
    report = L1relReport(curves, sigmas, n, {
        "fixed": fixed_sizes,
        "uniform": chunking.uniform(size, n),
        "adaptive": chunking.adaptive(mean, max_chunk=max_chunk, min_chunk=min_chunk, max_order=max_order),
    }, texts)
    out = Path(out)
    plot(report, out)
    out.with_suffix(".json").write_text(json.dumps(report.to_json(), indent=2))
    return report
