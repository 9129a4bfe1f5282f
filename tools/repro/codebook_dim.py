"""The paper's codebook-dimension finding at small scale (card §5, Table 5): utilisation and reconstruction for
codebook dims below, at and above the encoder width.

The paper (SigLIP2, width 1152, 16,384 codes) finds that dims ≤ 256 do not converge, 384 → 1152 reach 64 → 83 %
utilisation, and 1536 (above the width) reaches 100 % and the best rFID. Here: the ``tiny`` preset (the committed
tiny ViT encoder, width 64, 1,024 codes, shapes world at 32 px), stage 1 only (a tokenizer trained on a frozen
encoder, as the ablation is), with ``quantizer.dim`` swept over widths/4 … 4·width, 3 seeds each::

    uv run python tools/repro/codebook_dim.py                      # 5 dims × 3 seeds, 2 jobs at a time

Every job is ``vqrae train --set quantizer.dim=D --set train.seed=S --set train.stage2_steps=0
--set train.stage1_steps=N ...``; utilisation, perplexity and dead codes are counted over all held-out tokens
(500 images × 64 tokens). Writes ``docs/results/vqrae_codebook_dim.{md,json,png}``; runs go to
``outputs/codebook_dim/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqrae_runs import ROOT, fmt, mean_std, parallel, train

WIDTH = 64  # the committed tiny encoder's width (assets/vqrae_encoder/config.json)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="16,32,64,128,256", help="codebook dims (the encoder width is 64)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000, help="stage-1 steps per run")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run")
    p.add_argument("--out", default=str(ROOT / "outputs" / "codebook_dim"))
    p.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    out = Path(args.out)
    jobs = [(d, s) for d in dims for s in range(args.seeds)]
    sets = lambda d, s: [f"quantizer.dim={d}", f"train.seed={s}", f"train.stage1_steps={args.steps}",  # noqa: E731
                         "train.stage2_steps=0", "eval.probe_train=0", "eval.probe_test=0", *args.set]
    results = parallel(jobs, lambda j: train(out / f"d{j[0]}_s{j[1]}", sets(*j)), args.jobs)
    by_dim: dict[int, list[dict]] = {d: [] for d in dims}
    for (d, _), r in zip(jobs, results, strict=True):
        by_dim[d].append(r)

    keys = ("utilisation", "perplexity", "dead_codes", "psnr", "ssim", "fd_initial_encoder")
    summary = {"encoder_width": WIDTH, "codebook_size": results[0]["codebook"][0], "stage1_steps": args.steps,
               "seeds": list(range(args.seeds)), "overrides": args.set,
               "mean_image_psnr": results[0]["mean_image_psnr"],
               "dims": {str(d): {k: [r[k] for r in rs] for k in keys} for d, rs in by_dim.items()}}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "vqrae_codebook_dim.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# VQRAE codebook dimension vs encoder width, small scale", "",
        f"`uv run python tools/repro/codebook_dim.py` — the `tiny` preset (tiny ViT encoder of width {WIDTH}, SimVQ "
        f"with {summary['codebook_size']} codes), stage 1 only ({args.steps} steps of batch 64), "
        f"{args.seeds} seeds, mean ± std; held-out shapes images (500 × 64 tokens). Mean-image baseline PSNR "
        f"{summary['mean_image_psnr']:.2f} dB.", "",
        "| codebook dim | dim / width | utilisation | perplexity | dead codes | PSNR (dB) | SSIM | FD (initial encoder) |",
        "|---|---|---|---|---|---|---|---|"]
    for d in dims:
        v = summary["dims"][str(d)]
        lines.append(f"| {d} | {d / WIDTH:g} | {fmt(v['utilisation'], 1, pct=True)} | {fmt(v['perplexity'], 0)} | "
                     f"{fmt(v['dead_codes'], 0)} | {fmt(v['psnr'])} | {fmt(v['ssim'], 3)} | "
                     f"{fmt(v['fd_initial_encoder'], 3)} |")
    lines += ["", "![utilisation and PSNR vs codebook dim](vqrae_codebook_dim.png)", ""]
    (res / "vqrae_codebook_dim.md").write_text("\n".join(lines))
    plot(summary, dims, res / "vqrae_codebook_dim.png")
    print("\n".join(lines[4:-2]))


def plot(summary: dict, dims: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "utilisation", "codebook utilisation (held-out)"),
                           (axes[1], "psnr", "PSNR (dB, held-out)")):
        ms = [mean_std(summary["dims"][str(d)][key]) for d in dims]
        ax.errorbar(dims, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3)
        for d in dims:
            ax.scatter([d] * len(summary["seeds"]), summary["dims"][str(d)][key], s=8, color="gray", alpha=0.6)
        ax.axvline(WIDTH, color="k", ls="--", lw=1, label=f"encoder width {WIDTH}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("codebook dim e")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].axhline(summary["mean_image_psnr"], color="gray", ls=":", label="mean-image baseline")
    axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
