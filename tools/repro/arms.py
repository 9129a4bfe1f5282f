"""What the repro scripts share: run (arm, seed) jobs in parallel worker processes, summarise their metrics over
seeds, plot training-reward curves and write the markdown table. Used by ``chunk_vs_step.py`` and
``slas_vs_dance.py``; each script defines its arms and calls back into itself with ``--one ARM SEED``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SMALL_BATCH = ["prompts.per_iteration=8", "sample.micro_batch_size=0", "train.ema_decay=0.9"]
"""The shapes preset's batch before 2026-12-07 (8 prompts × G 8, EMA 0.9), with which the committed results were
made; the preset now takes 64 prompts per iteration for 12 iterations (docs/results/shapes_rl.md). ``--set`` wins."""


def run_parallel(script: str, jobs: list[tuple[str, int]], argv: list[str], runs: Path, n_jobs: int,
                 resume: bool) -> None:
    """Each (arm, seed) as ``python script *argv --one arm seed`` with one torch thread, ``n_jobs`` at a time (CPU:
    one per core); logs in ``runs/<arm>_s<seed>.log``. Stops at the first failed job."""
    base = [a for a in argv if a != "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < n_jobs:
            arm, seed = pending.pop(0)
            cmd = [sys.executable, script, *base, "--one", arm, str(seed)] + (["--resume"] if resume else [])
            log = open(runs / f"{arm}_s{seed}.log", "w")
            running.append((arm, seed, time.time(), subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for job in list(running):
            arm, seed, tic, proc = job
            if proc.poll() is None:
                continue
            running.remove(job)
            if proc.returncode != 0:
                raise SystemExit(f"{arm} seed {seed} failed (rc {proc.returncode}); see {runs}/{arm}_s{seed}.log")
            print(f"{arm:<18} seed {seed}: done in {time.time() - tic:.0f} s", flush=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def train_curve(metrics: list[dict]) -> list[float]:
    """The training reward per iteration (records with step > 0)."""
    return [r["reward_mean"] for r in metrics if r["step"] > 0 and "reward_mean" in r]


def steps_to_threshold(curve: list[float], threshold: float, window: int = 5) -> int | None:
    """The first iteration (1-based) whose trailing ``window``-iteration mean reaches ``threshold``; None if never."""
    for k in range(window, len(curve) + 1):
        if statistics.fmean(curve[k - window:k]) >= threshold:
            return k
    return None


def last_eval(metrics: list[dict], key: str) -> float:
    return next(r[key] for r in reversed(metrics) if key in r)


def summarise(results: dict[str, list[list[dict]]], last: int) -> dict[str, dict]:
    """Per arm, over seeds: final and base GenEval-style score, gain, mean training reward of the last ``last``
    iterations, and each evaluated category's final score."""
    out = {}
    for arm, runs in results.items():
        finals = [last_eval(m, "eval/geneval") for m in runs]
        bases = [m[0]["eval/geneval"] for m in runs if m[0]["step"] == 0]
        train_r = [statistics.fmean(train_curve(m)[-last:]) for m in runs]
        final_rec = [next(r for r in reversed(m) if "eval/geneval" in r) for m in runs]
        tags = sorted(k for k in final_rec[0] if k.startswith("eval/") and k not in ("eval/geneval", "eval/reward_mean"))
        out[arm] = {"final": finals, "base": bases, "train_reward_last": train_r,
                    "final_mean_std": mean_std(finals), "gain_mean_std": mean_std([f - b for f, b in zip(finals, bases)]),
                    "train_reward_mean_std": mean_std(train_r),
                    "per_tag": {t.removeprefix("eval/"): mean_std([r[t] for r in final_rec]) for t in tags}}
    return out


def plot_curves(results: dict[str, list[list[dict]]], path: Path, *, ylabel: str, title: str,
                dashed: tuple[str, ...] = (), extra=None) -> None:
    """Training reward per iteration, mean over seeds with a ± std band; ``extra(fig, axes)`` may add panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ncols = 2 if extra else 1
    fig, axes = plt.subplots(1, ncols, figsize=(8 * ncols, 4.5), squeeze=False)
    ax = axes[0][0]
    for arm, runs in results.items():
        curves = np.array([train_curve(m) for m in runs])
        x = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(x, mean, label=arm, lw=1.6, ls="--" if arm in dashed else "-")
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    if extra:
        extra(fig, axes[0][1])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(summary: dict[str, dict], last: int, score_name: str = "final GenEval-style score") -> str:
    lines = [f"| arm | {score_name} | gain over base | train reward (last {last} it.) |", "|---|---|---|---|"]
    for arm, s in summary.items():
        (fm, fs), (gm, gs), (tm, ts) = s["final_mean_std"], s["gain_mean_std"], s["train_reward_mean_std"]
        lines.append(f"| {arm} | {fm:.3f} ± {fs:.3f} | {gm:+.3f} ± {gs:.3f} | {tm:.3f} ± {ts:.3f} |")
    tags = list(next(iter(summary.values()))["per_tag"])
    lines += ["", "Per category (final, mean ± std):", "", "| arm | " + " | ".join(tags) + " |",
              "|---|" + "---|" * len(tags)]
    for arm, s in summary.items():
        lines.append(f"| {arm} | " + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in s["per_tag"].values()) + " |")
    return "\n".join(lines)
