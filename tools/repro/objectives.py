"""GRPO vs DAPO vs Dr. GRPO vs GSPO on the shapes-world counting task, same budget, 3 seeds (mllm_rft.md §2).

Every arm starts from the committed tiny Qwen2-VL (assets/shapes_vlm) with the `shapes-count` preset: same
questions, group size, sampling, rewards (accuracy + 0.5 · format), learning rate, number of rollout batches and
seeds; only the objective preset differs (each with its paper's defaults, `mllm_rft.objective.PRESETS`):

* ``grpo``     group std, seq-mean-token-mean, token ratio, ε 0.2, k3 KL β 0.04
* ``dapo``     group std, token-mean, clip-higher 0.2 / 0.28, β 0 (dynamic sampling off unless `--set
               rollout.dynamic_sampling=true`, which changes the number of rollouts per step)
* ``dr_grpo``  no std, constant denominator N · max_new_tokens, β 0
* ``gspo``     sequence ratio, ε 3e-4 / 4e-4, β 0; the same μ / mini-batch setting as the others (`train.*`), so
               with μ = 1 and one mini-batch its clip never acts (card §2: clipping acts only off-policy)

Reported per arm (mean ± std over seeds): greedy accuracy on held-out counting questions and on the OOD split
(held-out colour × shape pairs), their gains over the base, and the mean response length at the end::

    uv run python tools/repro/objectives.py                              # 4 objectives × 3 seeds
    uv run python tools/repro/objectives.py --arms grpo,dapo --seeds 1 --steps 10   # a quick look
    uv run python tools/repro/objectives.py --report     # rebuild table, JSON and plot from finished runs

The table also gives how often the policy answers each count (greedy, held-out), which shows a policy that has
collapsed onto a few answers.

Writes docs/results/mllm_rft_objectives.{md,json,png}; run folders go to outputs/mllm_rft_objectives/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arms import mean_std, run_parallel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("grpo", "dapo", "dr_grpo", "gspo")
SPLITS = {"test": "test greedy", "ood": "OOD greedy", "test_sampled": "test avg@k", "ood_sampled": "OOD avg@k"}


def run_arm(arm: str, seed: int, args) -> None:
    from shared.training import load_config

    from mllm_rft.config import RFTConfig
    from mllm_rft.trainer import train

    run_dir = Path(args.runs) / f"{arm}_s{seed}"
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    overrides = [f"run.dir={run_dir}", f"train.seed={seed}", f"train.steps={args.steps}",
                 f"eval.every={args.eval_every}", "eval.examples=0", "run.progress=false", "run.threads=1",
                 f"run.save_every={args.steps}", f"objective.preset={arm}", *args.set]
    train(load_config(RFTConfig, preset="shapes-count", overrides=overrides))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summarise(runs: Path, arms: list[str], seeds: list[int]) -> dict:
    out = {}
    for arm in arms:
        evals = [json.loads((runs / f"{arm}_s{s}" / "eval.json").read_text()) for s in seeds]
        row = {}
        for split in [k for k in SPLITS if k in evals[0]["after"]]:
            after = [e["after"][split]["accuracy"] for e in evals]
            before = [e["before"][split]["accuracy"] for e in evals]
            row[split] = {"after": after, "before": before, "after_mean_std": mean_std(after),
                          "gain_mean_std": mean_std([a - b for a, b in zip(after, before)])}
        lengths = [e["after"]["test"]["length"] for e in evals]
        row["length_mean_std"] = mean_std(lengths)
        row["length_before"] = evals[0]["before"]["test"]["length"]
        # how often each answer is given (greedy, held-out): shows a policy collapsing onto a few answers
        golds = list(evals[0]["after"]["test"].get("answers", {}))
        row["answered_before"] = {g: evals[0]["before"]["test"]["answers"][g]["answered"] for g in golds}
        row["answered_mean"] = {g: mean_std([e["after"]["test"]["answers"][g]["answered"] for e in evals])[0]
                                for g in golds}
        curves = [[r["accuracy"] for r in _metrics(runs / f"{arm}_s{s}") if "accuracy" in r and "reward/mean" in r]
                  for s in seeds]
        row["train_accuracy_curves"] = curves
        out[arm] = row
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
    for arm, row in summary.items():
        c = np.array(row["train_accuracy_curves"])
        k = min(5, c.shape[1])  # moving average over 5 steps
        sm = np.array([np.convolve(x, np.ones(k) / k, mode="valid") for x in c])
        x = np.arange(k, c.shape[1] + 1)
        axes[0].plot(x, sm.mean(0), label=arm)
        axes[0].fill_between(x, sm.mean(0) - sm.std(0), sm.mean(0) + sm.std(0), alpha=0.15)
    axes[0].set(xlabel="step", ylabel="training accuracy (5-step mean)", title="sampled completions, training questions")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    names = list(summary)
    for j, split in enumerate(("test", "ood")):
        means = [summary[a][split]["after_mean_std"][0] for a in names]
        stds = [summary[a][split]["after_mean_std"][1] for a in names]
        axes[1].bar(np.arange(len(names)) + 0.38 * j, means, 0.38, yerr=stds, capsize=3,
                    label=f"{split} (base {summary[names[0]][split]['before'][0]:.3f})")
        axes[1].axhline(summary[names[0]][split]["before"][0], color=f"C{j}", ls="--", lw=1)
    axes[1].set_xticks(np.arange(len(names)) + 0.19, names)
    axes[1].set(ylabel="greedy accuracy after training", title="held-out and OOD counting (dashed: base)")
    axes[1].legend(loc="lower center")
    axes[1].grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: dict) -> str:
    first = next(iter(summary.values()))
    splits = [s for s in SPLITS if s in first]
    golds = list(first.get("answered_mean", {}))
    shares = f" | answers {' / '.join(golds)} (share, greedy held-out)" if golds else ""

    def answered(d: dict) -> str:
        return (" | " + " / ".join(f"{d[g]:.2f}" for g in golds)) if golds else ""

    lines = ["| objective | " + " | ".join(f"{SPLITS[s]} | gain" for s in splits) + " | response length (tokens)"
             + shares + " |", "|---|" + "---|---|" * len(splits) + "---|" + ("---|" if golds else "")]
    lines.append("| base (SFT) | " + " | ".join(f"{first[s]['before'][0]:.3f} | " for s in splits)
                 + f" | {first['length_before']:.1f}" + answered(first.get("answered_before", {})) + " |")
    for arm, r in summary.items():
        cells = []
        for s in splits:
            (m, sd), (g, gs) = r[s]["after_mean_std"], r[s]["gain_mean_std"]
            cells.append(f"{m:.3f} ± {sd:.3f} | {g:+.3f} ± {gs:.3f}")
        lm, ls = r["length_mean_std"]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {lm:.1f} ± {ls:.1f}" + answered(r.get("answered_mean", {}))
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="rollout batches per run (default: the preset's)")
    p.add_argument("--eval-every", type=int, default=0, help="intermediate evaluations (0: before and after only)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    p.add_argument("--runs", default=str(ROOT / "outputs" / "mllm_rft_objectives"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "mllm_rft_objectives"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra RFTConfig overrides")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report", action="store_true", help="only rebuild the table, JSON and plot from finished runs")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.steps is None:
        from shared.training import load_config

        from mllm_rft.config import RFTConfig

        args.steps = load_config(RFTConfig, preset="shapes-count").train.steps
    if args.one:
        run_arm(args.one[0], int(args.one[1]), args)
        return
    arms = [a for a in args.arms.split(",") if a]
    for a in arms:
        if a not in ARMS:
            raise SystemExit(f"--arms: unknown objective {a!r}; choose from {', '.join(ARMS)}")
    seeds = list(range(args.seeds))
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    if not args.report:
        run_parallel(__file__, [(a, s) for a in arms for s in seeds], argv, runs, args.jobs, args.resume)
    summary = summarise(runs, arms, seeds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(summary, out.with_suffix(".png"))
    md = table(summary)
    print(md)
    out.with_suffix(".json").write_text(json.dumps({"steps": args.steps, "seeds": seeds, "set": args.set,
                                                    "summary": summary}, indent=2))
    cmd = " ".join(["uv run python tools/repro/objectives.py", *[a for a in argv if a != "--report"]])
    out.with_suffix(".md").write_text(
        f"# GRPO vs DAPO vs Dr. GRPO vs GSPO on shapes-world counting\n\n`{cmd}`\n\n"
        f"{args.steps} rollout batches per run, {len(seeds)} seeds, preset `shapes-count` (tiny Qwen2-VL from "
        f"assets/shapes_vlm); accuracy on 300 held-out and 300 OOD questions, greedy and avg@k (k sampled completions "
        f"per question at the rollout temperature); mean ± std over seeds, gain = after − before per seed.\n\n{md}\n\n"
        f"![curves]({out.with_suffix('.png').name})\n")


if __name__ == "__main__":
    main()
