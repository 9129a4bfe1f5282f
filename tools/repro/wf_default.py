"""The default ``wfdiffuser train`` run over seeds: return-conditioned vs unconditioned planning vs the data.

For each seed this runs exactly the console command a user runs (the ``pendulum`` preset), with only the seed, the run
folder and the number of evaluation episodes set::

    wfdiffuser train --set train.seed=S --set run.dir=OUT/sS --set eval.episodes=E --set eval.n_envs=E
    wfdiffuser eval OUT/sS --set plan.guidance=0 --out OUT/sS/eval_w0.json     # the same network, w = 0

then tabulates the conditioned return (w = the preset's 1.2, target 1 = the best return in the data), the
unconditioned return and the dataset's mean return, mean ± standard error over seeds, and plots every episode::

    uv run python tools/repro/wf_default.py                # 3 seeds, 20 episodes each, 2 at a time (CPU, ~20 min)

Writes ``docs/results/wfdiffuser_pendulum.{md,json,png}``; runs go to ``outputs/wf_default/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wfdiffuser.metrics import mean_and_stderr, normalized_score

ROOT = Path(__file__).resolve().parents[2]


def run_seed(seed: int, out: Path, episodes: int, extra: list[str]) -> dict:
    run = out / f"s{seed}"
    sets = [f"train.seed={seed}", f"run.dir={run}", f"eval.episodes={episodes}", f"eval.n_envs={episodes}",
            "run.progress=false", *extra]
    cli = [sys.executable, "-m", "wfdiffuser"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(out / f"s{seed}.log", "w") as log:
        tic = time.time()
        subprocess.run(cli + ["train"] + [a for s in sets for a in ("--set", s)], env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
        subprocess.run(cli + ["eval", str(run), "--set", "plan.guidance=0", "--out", str(run / "eval_w0.json")],
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"seed {seed}: done in {time.time() - tic:.0f} s", flush=True)
    return {"conditioned": json.loads((run / "eval.json").read_text()),
            "unconditioned": json.loads((run / "eval_w0.json").read_text())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..n-1")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per seed and mode (one env each)")
    p.add_argument("--jobs", type=int, default=2, help="seeds in parallel (one torch thread each)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--out", default=str(ROOT / "outputs" / "wf_default"))
    p.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        res = list(pool.map(lambda s: run_seed(s, out, args.episodes, args.set), range(args.seeds)))

    first = res[0]["conditioned"]
    summary = {"command": "wfdiffuser train (preset pendulum)", "overrides": args.set, "dataset": first["dataset"],
               "kind": first["kind"], "episodes": args.episodes, "seeds": list(range(args.seeds)),
               "dataset_return_mean": first["dataset_return_mean"], "ref_min_score": first["ref_min_score"],
               "ref_max_score": first["ref_max_score"]}
    for mode in ("conditioned", "unconditioned"):
        rets = [r[mode]["return_mean"] for r in res]
        scores = [r[mode]["score_mean"] for r in res]
        summary[mode] = {"return": mean_and_stderr(rets), "score": mean_and_stderr(scores), "per_seed_return": rets,
                         "per_episode_returns": [r[mode]["returns"] for r in res],
                         "frequency_shift": mean_and_stderr([r[mode]["frequency_shift"] for r in res]),
                         "action_smoothness": mean_and_stderr([r[mode]["action_smoothness"] for r in res])}
    gap = [c - u for c, u in zip(summary["conditioned"]["per_seed_return"],
                                 summary["unconditioned"]["per_seed_return"])]
    summary["gap_conditioned_minus_unconditioned"] = mean_and_stderr(gap)

    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "wfdiffuser_pendulum.json").write_text(json.dumps(summary, indent=2))
    c, u = summary["conditioned"], summary["unconditioned"]
    per_seed = ", ".join(f"{a:.0f} vs {b:.0f}" for a, b in zip(c["per_seed_return"], u["per_seed_return"]))
    lines = [
        "# The default `wfdiffuser train` run on our Pendulum set, over seeds", "",
        f"`uv run python tools/repro/wf_default.py` (the `pendulum` preset: {summary['kind']} on "
        f"`{summary['dataset']}`; {len(res)} training seeds, {args.episodes} evaluation episodes per seed and mode on "
        "the same env seeds; mean ± standard error over training seeds). Normalised score: 0 = uniform random "
        f"actions ({summary['ref_min_score']:.0f}), 100 = the noiseless scripted swing-up "
        f"({summary['ref_max_score']:.0f}).", "",
        "| planning | return | normalised score | frequency shift | action smoothness |", "|---|---|---|---|---|",
        f"| return-conditioned (w = 1.2, target 1) | {c['return'][0]:.1f} ± {c['return'][1]:.1f} | "
        f"{c['score'][0]:.1f} ± {c['score'][1]:.1f} | {c['frequency_shift'][0]:.3f} | {c['action_smoothness'][0]:.3f} |",
        f"| unconditioned (w = 0, same network) | {u['return'][0]:.1f} ± {u['return'][1]:.1f} | "
        f"{u['score'][0]:.1f} ± {u['score'][1]:.1f} | {u['frequency_shift'][0]:.3f} | {u['action_smoothness'][0]:.3f} |",
        f"| the dataset's episodes | {summary['dataset_return_mean']:.1f} | "
        f"{float(normalized_score(summary['dataset_return_mean'], summary['ref_min_score'], summary['ref_max_score'])):.1f}"
        " | | |",
        "", f"Conditioned minus unconditioned, per seed: {per_seed} "
        f"(gap {summary['gap_conditioned_minus_unconditioned'][0]:.1f} ± "
        f"{summary['gap_conditioned_minus_unconditioned'][1]:.1f}).", "",
        "The frequency shift compares the plans' low-frequency energy with that of all dataset windows; where most "
        "of the data is a behaviour the conditioned planner avoids, a large value means 'unlike the average window', "
        "not an error.", "",
        "![every episode](wfdiffuser_pendulum.png)", ""]
    (res_dir / "wfdiffuser_pendulum.md").write_text("\n".join(lines))
    plot(summary, res_dir / "wfdiffuser_pendulum.png")
    print("\n".join(lines[4:9]))


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, mode in enumerate(("conditioned", "unconditioned")):
        for s, rets in enumerate(summary[mode]["per_episode_returns"]):
            x = i + (s - (len(summary["seeds"]) - 1) / 2) * 0.18
            ax.scatter([x] * len(rets), rets, s=10, alpha=0.6, color=f"C{s}", label=f"seed {s}" if i == 0 else None)
        ax.hlines(summary[mode]["return"][0], i - 0.35, i + 0.35, color="k")
    ax.axhline(summary["dataset_return_mean"], color="gray", ls="--", label="dataset mean")
    ax.set_xticks([0, 1], ["return-conditioned (w = 1.2)", "unconditioned (w = 0)"])
    ax.set_ylabel("episode return")
    ax.set_title(f"{summary['kind']} on {summary['dataset']}: every evaluation episode", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
