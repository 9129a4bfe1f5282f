"""Chunk-level vs step-level GRPO on the shapes world, everything else held equal (chunk_grpo.md §7 "Apples to apples").

Arms (all start from the committed shapes base, same SDE and noise, clip, learning rate, prompts per iteration,
group size and iterations; only the trained units differ):

* ``step``              step-level GRPO: every transition its own unit (chunk size 1, K = T)
* ``gcpo_fixed``        GCPO, the preset's fixed chunks (high noise first)
* ``gcpo_adaptive``     GCPO, our adaptive L1rel chunking (chunk_grpo README)
* ``step_half``         step-level, half of the steps per sample at random (the budget of the ``ws`` arms)
* ``gcpo_fixed_ws``     GCPO fixed chunks, half of them per sample drawn by L1rel weight (Eq. 17)
* ``gcpo_adaptive_ws``  GCPO adaptive chunks with weighted sampling
* ``dance_grpo``        DanceGRPO's own defaults as a separate baseline: dance SDE η = 0.3, a random 60 % of the
  steps (last transition dropped), per-group unbiased std advantages, clip 1e-4

Each arm runs for ``--seeds`` seeds. Reported: the final GenEval-style score of the ODE samples of the fixed
evaluation prompts (per seed; mean ± std over seeds), its gain over the base, and the training reward of the last
iterations; a curve plot of the training reward (mean over seeds, shaded ± std)::

    uv run python tools/repro/chunk_vs_step.py                       # 7 arms × 3 seeds, CPU
    uv run python tools/repro/chunk_vs_step.py --arms step,gcpo_fixed --seeds 1 --iterations 5   # a quick look

Writes ``docs/results/chunk_vs_step.{md,json,png}``; run folders go to ``outputs/chunk_vs_step/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ARMS: dict[str, tuple[str, list[str]]] = {
    # name: (trainer, overrides on top of the common ones)
    "step": ("gcpo", ["chunk.chunking=uniform", "chunk.size=1"]),
    "gcpo_fixed": ("gcpo", ["chunk.chunking=fixed"]),
    "gcpo_adaptive": ("gcpo", ["chunk.chunking=adaptive"]),
    "step_half": ("gcpo", ["chunk.chunking=uniform", "chunk.size=1", "chunk.sampling=uniform",
                           "chunk.timestep_fraction=0.5"]),
    "gcpo_fixed_ws": ("gcpo", ["chunk.chunking=fixed", "chunk.sampling=weighted", "chunk.timestep_fraction=0.5"]),
    "gcpo_adaptive_ws": ("gcpo", ["chunk.chunking=adaptive", "chunk.sampling=weighted",
                                  "chunk.timestep_fraction=0.5"]),
    "dance_grpo": ("flow", ["sample.kind=dance", "sample.noise_level=0.3", "train.units=random", "train.fraction=0.6",
                            "train.drop_last=true", "train.adv_std=group", "train.adv_eps=1e-8",
                            "train.adv_unbiased=true", "train.clip_low=1e-4"]),
}


def run_arm(arm: str, seed: int, args) -> list[dict]:
    from shared.training import load_config, read_metrics

    trainer, extra = ARMS[arm]
    run_dir = Path(args.runs) / f"{arm}_s{seed}"
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    common = [f"run.dir={run_dir}", f"train.seed={seed}", f"train.iterations={args.iterations}",
              f"run.eval_every={args.iterations}", f"run.eval_per_tag={args.eval_per_tag}", "run.grids=false",
              "run.progress=false", f"run.save_every={args.iterations}", *args.set]
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


def run_parallel(jobs: list[tuple[str, int]], args, argv: list[str]) -> None:
    """Each (arm, seed) in its own process with one torch thread, ``--jobs`` at a time (CPU: one per core)."""
    import os
    import subprocess

    base = [a for a in argv if a not in ("--resume",)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < args.jobs:
            arm, seed = pending.pop(0)
            cmd = [sys.executable, __file__, *base, "--one", arm, str(seed)] + (["--resume"] if args.resume else [])
            log = open(Path(args.runs) / f"{arm}_s{seed}.log", "w")
            running.append((arm, seed, time.time(), subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for job in list(running):
            arm, seed, tic, proc = job
            if proc.poll() is None:
                continue
            running.remove(job)
            if proc.returncode != 0:
                raise SystemExit(f"{arm} seed {seed} failed (rc {proc.returncode}); see {args.runs}/{arm}_s{seed}.log")
            print(f"{arm:<18} seed {seed}: done in {time.time() - tic:.0f} s", flush=True)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: dict[str, list[list[dict]]], last: int) -> dict[str, dict]:
    out = {}
    for arm, runs in results.items():
        finals = [next(r["eval/geneval"] for r in reversed(m) if "eval/geneval" in r) for m in runs]
        bases = [m[0]["eval/geneval"] for m in runs if m[0]["step"] == 0]
        train_r = [statistics.fmean([r["reward_mean"] for r in m if r["step"] > 0][-last:]) for m in runs]
        tags = sorted(k for k in runs[0][-1] if k.startswith("eval/") and k not in ("eval/geneval", "eval/reward_mean"))
        out[arm] = {"final": finals, "base": bases, "train_reward_last": train_r,
                    "final_mean_std": _mean_std(finals), "gain_mean_std": _mean_std([f - b for f, b in zip(finals, bases)]),
                    "train_reward_mean_std": _mean_std(train_r),
                    "per_tag": {t.removeprefix("eval/"): _mean_std([m[-1][t] for m in runs]) for t in tags}}
    return out


def plot(results: dict[str, list[list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, runs in results.items():
        curves = np.array([[r["reward_mean"] for r in m if r["step"] > 0] for m in runs])
        x = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(x, mean, label=arm, lw=1.6, ls="--" if arm == "dance_grpo" else "-")
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training reward (shapes, partial credit)")
    ax.set_title(f"chunk vs step GRPO on the shapes world (mean ± std over {len(next(iter(results.values())))} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(summary: dict[str, dict], args) -> str:
    lines = ["| arm | final GenEval-style score | gain over base | train reward (last "
             f"{args.last} it.) |", "|---|---|---|---|"]
    for arm, s in summary.items():
        (fm, fs), (gm, gs), (tm, ts) = s["final_mean_std"], s["gain_mean_std"], s["train_reward_mean_std"]
        lines.append(f"| {arm} | {fm:.3f} ± {fs:.3f} | {gm:+.3f} ± {gs:.3f} | {tm:.3f} ± {ts:.3f} |")
    tags = list(next(iter(summary.values()))["per_tag"])
    lines += ["", "Per category (final, mean ± std):", "", "| arm | " + " | ".join(tags) + " |",
              "|---|" + "---|" * len(tags)]
    for arm, s in summary.items():
        lines.append(f"| {arm} | " + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in s["per_tag"].values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list from {', '.join(ARMS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=30, help="GRPO iterations per run (the budget)")
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
    run_parallel(jobs, args, argv)
    from shared.training import read_metrics

    results = {arm: [read_metrics(Path(args.runs) / f"{arm}_s{seed}") for seed in range(args.seeds)] for arm in arms}
    summary = summarise(results, args.last)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, out.with_suffix(".png"))
    md = (f"# Chunk vs step GRPO on the shapes world\n\nCommand: `uv run python tools/repro/chunk_vs_step.py "
          f"{' '.join(argv)}` ({(time.time() - t0) / 60:.0f} min on this machine). {args.seeds} seeds × "
          f"{args.iterations} iterations per arm from the committed base; the chunk_grpo `shapes` preset for every "
          "setting not named by the arm. Final score: GenEval-style score of ODE samples of the fixed evaluation "
          f"prompts ({args.eval_per_tag} per trained category, one image each), after the last iteration.\n\n"
          + table(summary, args) + f"\n\nTraining reward curves: [{out.name}.png]({out.name}.png)\n")
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "summary": summary,
                                                    "curves": {a: [[r.get("reward_mean") for r in m] for m in runs]
                                                               for a, runs in results.items()}}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
