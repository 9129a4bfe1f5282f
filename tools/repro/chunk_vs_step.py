"""Chunk-level vs step-level GRPO on the shapes world, everything else held equal (chunk_grpo.md §7 "Apples to apples").

Arms (all start from the committed shapes base with the chunk_grpo ``shapes`` preset: same SDE and noise, stochastic
window (the first 4 of 8 transitions), clip, learning rate, prompts per iteration, group size and iterations, and
two passes over each rollout (``COMMON``); only the trained units differ):

* ``step``              step-level GRPO: every stochastic transition its own unit (chunk size 1)
* ``gcpo_fixed``        GCPO, the preset's fixed chunks [2, 2] (high noise first)
* ``gcpo_adaptive``     GCPO, our adaptive L1rel chunking (chunk_grpo README), chunks of at most 2
* ``gcpo_fixed_ws``     GCPO fixed chunks, half of them per sample drawn by L1rel weight (Eq. 17)
* ``gcpo_adaptive_ws``  GCPO adaptive chunks with weighted sampling
* ``dance_grpo``        DanceGRPO's own defaults as a separate baseline: dance SDE η = 0.3, a random 60 % of the
  stochastic steps, per-group unbiased std advantages, clip 1e-4
* ``step_half``         (not in the default set) step-level, half of the steps per sample at random

Each arm runs for ``--seeds`` seeds. Reported: the final GenEval-style score of the ODE samples of the fixed
evaluation prompts (per seed; mean ± std over seeds), its gain over the base, and the training reward of the last
iterations; a curve plot of the training reward (mean over seeds, shaded ± std)::

    uv run python tools/repro/chunk_vs_step.py                       # 6 arms × 3 seeds, CPU
    uv run python tools/repro/chunk_vs_step.py --arms step,gcpo_fixed --seeds 1 --iterations 5   # a quick look

Writes ``docs/results/chunk_vs_step.{md,json,png}``; run folders go to ``outputs/chunk_vs_step/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arms import SMALL_BATCH, plot_curves, run_parallel, summarise, table, train_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

ARMS: dict[str, tuple[str, list[str]]] = {
    # name: (trainer, overrides on top of the common ones); the preset's 4 stochastic transitions are the trained ones
    "step": ("gcpo", ["chunk.chunking=uniform", "chunk.size=1"]),
    "gcpo_fixed": ("gcpo", ["chunk.chunking=fixed"]),
    "gcpo_adaptive": ("gcpo", ["chunk.chunking=adaptive", "chunk.max_chunk=2"]),
    "step_half": ("gcpo", ["chunk.chunking=uniform", "chunk.size=1", "chunk.sampling=uniform",
                           "chunk.timestep_fraction=0.5"]),
    "gcpo_fixed_ws": ("gcpo", ["chunk.chunking=fixed", "chunk.sampling=weighted", "chunk.timestep_fraction=0.5"]),
    "gcpo_adaptive_ws": ("gcpo", ["chunk.chunking=adaptive", "chunk.max_chunk=2", "chunk.sampling=weighted",
                                  "chunk.timestep_fraction=0.5"]),
    "dance_grpo": ("flow", ["sample.kind=dance", "sample.noise_level=0.3", "train.units=random", "train.fraction=0.6",
                            "train.drop_last=true", "train.adv_std=group", "train.adv_eps=1e-8",
                            "train.adv_unbiased=true", "train.clip_low=1e-4"]),
}
DEFAULT_ARMS = "step,gcpo_fixed,gcpo_adaptive,gcpo_fixed_ws,gcpo_adaptive_ws,dance_grpo"
COMMON = [*SMALL_BATCH, "train.inner_epochs=2"]
"""Two passes over each rollout: the first is on-policy, where a chunk's gradient equals the mean of its steps'
(ratio 1), so chunk and step arms can only differ in the second, off-policy pass, where the clip acts on chunk ratios
(geometric means) instead of step ratios."""


def run_arm(arm: str, seed: int, args) -> list[dict]:
    from shared.training import load_config, read_metrics

    trainer, extra = ARMS[arm]
    run_dir = Path(args.runs) / f"{arm}_s{seed}"
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    common = [f"run.dir={run_dir}", f"train.seed={seed}", f"train.iterations={args.iterations}",
              f"run.eval_every={args.iterations}", f"run.eval_per_tag={args.eval_per_tag}", "run.grids=false",
              "run.progress=false", f"run.save_every={args.iterations}", *COMMON, *args.set]
    if trainer == "gcpo":
        from chunk_grpo.config import GCPOConfig
        from chunk_grpo.train import train

        cfg = load_config(GCPOConfig, preset="shapes", overrides=common + extra)
    else:
        from shared.flow_grpo.config import RunConfig
        from shared.flow_grpo.train import train

        cfg = load_config(RunConfig, preset="shapes", overrides=common + extra)
    train(cfg)
    return read_metrics(run_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma list from {', '.join(ARMS)} (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=25, help="GRPO iterations per run (the budget)")
    p.add_argument("--eval-per-tag", type=int, default=16, help="evaluation prompts per category")
    p.add_argument("--last", type=int, default=5, help="iterations averaged for the final training reward")
    p.add_argument("--set", action="append", default=[], help="extra key=value override for every arm")
    p.add_argument("--runs", default=str(ROOT / "outputs/chunk_vs_step"))
    p.add_argument("--resume", action="store_true", help="keep existing run folders (continue killed runs)")
    p.add_argument("--out", default=str(ROOT / "docs/results/chunk_vs_step"))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)  # a worker process
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    arms = args.arms.split(",")
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    bad = [a for a in arms if a not in ARMS]
    if bad:
        p.error(f"unknown arms {bad}; choose from {', '.join(ARMS)}")
    if args.one:
        arm, seed = args.one[0], int(args.one[1])
        run_arm(arm, seed, args)
        return
    t0 = time.time()
    jobs = [(arm, seed) for seed in range(args.seeds) for arm in arms]
    run_parallel(__file__, jobs, argv, Path(args.runs), args.jobs, args.resume)
    from shared.training import read_metrics

    results = {arm: [read_metrics(Path(args.runs) / f"{arm}_s{seed}") for seed in range(args.seeds)] for arm in arms}
    summary = summarise(results, args.last)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(results, out.with_suffix(".png"), ylabel="training reward (shapes, partial credit)", dashed=("dance_grpo",),
                title=f"chunk vs step GRPO on the shapes world (mean ± std over {args.seeds} seeds)")
    md = (f"# Chunk vs step GRPO on the shapes world\n\nCommand: `uv run python tools/repro/chunk_vs_step.py "
          f"{' '.join(argv)}` ({(time.time() - t0) / 60:.0f} min on this machine). {args.seeds} seeds × "
          f"{args.iterations} iterations per arm from the committed base; the chunk_grpo `shapes` preset for every "
          "setting not named by the arm. Final score: GenEval-style score of ODE samples of the fixed evaluation "
          f"prompts ({args.eval_per_tag} per trained category, one image each), after the last iteration.\n\n"
          + table(summary, args.last) + f"\n\nTraining reward curves: [{out.name}.png]({out.name}.png)\n")
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "summary": summary,
                                                    "curves": {a: [train_curve(m) for m in runs]
                                                               for a, runs in results.items()}}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
