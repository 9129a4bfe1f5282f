"""Mask-GRPO ablations on the shapes world (mask_grpo.md §4, §6; the paper's Fig. 1 and Table 3).

Arms (all from the committed shapes-world masked base with the mask_grpo ``shapes`` preset: same prompts, reward,
sampler, learning rate, budget and seeds; one change each):

* ``p2``          the preset (the default run): p_θ2 (Eq. 15), committed tokens only, filter on, β = 0
* ``p1``          the paper's p_θ1 (Eq. 14): p_θ2 plus the re-masked positions' mass below κ_t
* ``ar``          AR-style: every masked position's drawn token (the paper: trains badly)
* ``no_filter``   the preset without the vanishing-sample filter (the paper: 0.60 vs 0.73 on GenEval)
* ``kl``          the preset with a k3 KL to a frozen copy of the base, β = ``--kl-beta`` (the paper: 0.62 with KL)
* ``unmask``      the unmasking reduction: rollouts and training with ``--reduced-steps`` iterations, evaluation
                  with the preset's full count (the paper: T 50 → 20, 0.66)

Reported per arm (mean ± std over seeds): the final GenEval-style score on the trained categories and its gain
over the base, per category, the training reward of the last iterations, and steps-to-threshold (first iteration
whose 5-iteration moving average of the training reward reaches the mean of the first 5 iterations over all runs
plus ``--delta``)::

    uv run python tools/repro/mask_grpo_ablation.py                         # 6 arms × 3 seeds, CPU
    uv run python tools/repro/mask_grpo_ablation.py --arms p1,ar --seeds 1 --iterations 5   # a quick look

Writes ``docs/results/mask_grpo_ablation.{md,json,png}``; run folders go to ``outputs/mask_grpo_ablation/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arms import plot_curves, run_parallel, steps_to_threshold, summarise, table, train_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def arms(args) -> dict[str, list[str]]:
    return {
        "p2": [],
        "p1": ["train.logprob=p1"],
        "ar": ["train.logprob=ar"],
        "no_filter": ["filter.enabled=false"],
        "kl": [f"train.kl_beta={args.kl_beta}"],
        "unmask": [f"sample.steps={args.reduced_steps}", f"run.eval_steps={args.full_steps}"],
    }


def run_arm(arm: str, seed: int, args) -> None:
    from shared.training import load_config

    from mask_grpo.config import MaskGRPOConfig
    from mask_grpo.train import train

    run_dir = Path(args.runs) / f"{arm}_s{seed}"
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    overrides = [f"run.dir={run_dir}", f"train.seed={seed}", f"train.iterations={args.iterations}",
                 f"run.eval_every={args.eval_every}", f"run.eval_per_tag={args.eval_per_tag}", "run.grids=false", "run.progress=false",
                 f"run.save_every={args.iterations}", *args.set, *arms(args)[arm]]
    train(load_config(MaskGRPOConfig, preset="shapes", overrides=overrides))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default="p2,p1,ar,no_filter,kl,unmask", help="comma-separated arms (module doc)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=30, help="iterations per run (the preset's budget)")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-per-tag", type=int, default=32, help="evaluation prompts per category (2 samples each)")
    p.add_argument("--kl-beta", type=float, default=0.04, help="β of the kl arm")
    p.add_argument("--full-steps", type=int, default=0, help="unmask arm: evaluation iterations (0 = the preset's "
                   "sample.steps)")
    p.add_argument("--reduced-steps", type=int, default=0, help="unmask arm: rollout iterations (0 = half the full)")
    p.add_argument("--delta", type=float, default=0.05, help="steps-to-threshold: reward gain over the start")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--set", action="append", default=[], help="extra config override for every arm")
    p.add_argument("--runs", default=str(ROOT / "outputs/mask_grpo_ablation"))
    p.add_argument("--out", default=str(ROOT / "docs/results/mask_grpo_ablation"))
    p.add_argument("--resume", action="store_true", help="keep existing run folders (resume them)")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if not args.full_steps or not args.reduced_steps:
        from shared.training import get_preset

        from mask_grpo.config import MaskGRPOConfig

        full = get_preset(MaskGRPOConfig, "shapes").sample.steps
        args.full_steps = args.full_steps or full
        args.reduced_steps = args.reduced_steps or max(1, args.full_steps // 2)
    names = [a for a in args.arms.split(",") if a]
    bad = [a for a in names if a not in arms(args)]
    if bad:
        p.error(f"unknown arms {bad}; choose from {', '.join(arms(args))}")
    if args.one:
        run_arm(args.one[0], int(args.one[1]), args)
        return

    from shared.training import read_metrics

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    tic = time.time()
    jobs = [(a, s) for s in range(args.seeds) for a in names]
    run_parallel(__file__, jobs, argv, runs, args.jobs, args.resume)
    results = {a: [read_metrics(runs / f"{a}_s{s}") for s in range(args.seeds)] for a in names}
    last = max(1, args.iterations // 4)
    summary = summarise(results, last)
    start = statistics.fmean(r for ms in results.values() for m in ms for r in train_curve(m)[:5])
    threshold = start + args.delta
    for a in names:
        hits = [steps_to_threshold(train_curve(m), threshold) for m in results[a]]
        summary[a]["steps_to_threshold"] = hits
    plot_curves(results, Path(args.out).with_suffix(".png"), ylabel="training reward (partial credit)",
                title=f"Mask-GRPO ablations, shapes world, {args.seeds} seeds (mean ± std)")
    lines = [f"| arm | steps to reward ≥ {threshold:.3f} (per seed) |", "|---|---|"]
    lines += [f"| {a} | {', '.join('—' if h is None else str(h) for h in summary[a]['steps_to_threshold'])} |"
              for a in names]
    md = (f"# Mask-GRPO ablations on the shapes world\n\n{args.seeds} seeds × {args.iterations} iterations per arm, "
          f"mask_grpo `shapes` preset; unmask arm {args.reduced_steps} → {args.full_steps} iterations; kl arm "
          f"β = {args.kl_beta}. Command: `uv run python tools/repro/mask_grpo_ablation.py {' '.join(argv)}` "
          f"({(time.time() - tic) / 60:.0f} min).\n\n" + table(summary, last) + "\n\n" + "\n".join(lines) +
          f"\n\n![curves]({Path(args.out).with_suffix('.png').name})\n")
    Path(args.out).with_suffix(".md").write_text(md)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"args": vars(args), "summary": summary,
                                                                  "curves": {a: [train_curve(m) for m in results[a]]
                                                                             for a in names}}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
