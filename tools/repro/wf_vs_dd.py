"""WFDiffuser vs Decision Diffuser vs Diffuser-style on our offline Pendulum / InvertedPendulum sets (wfdiffuser.md §7, §11).

Everything is held equal (the wfdiffuser presets: dataset, windows, normaliser, return label, U-Net width and depth,
embeddings, cosine DDPM, training budget, sampler, guidance, target, temperature, evaluation seeds); the arms differ
only in what is diffused:

* ``wf``        WFDiffuser: pad-1 Haar bands, one U-Net per band, the public code's state-embedding conditioner,
                the self-weighted band loss, inverse dynamics
* ``wf_stft``   WFDiffuser with our STFT + cross-attention conditioner on the noisy bands (card §4)
* ``dd``        Decision Diffuser: one U-Net on the states, inverse dynamics
* ``diffuser``  Diffuser-style: one U-Net on [actions, states], return CFG (not value guidance), a_0 from the plan

Each (dataset, arm, seed) trains once and is evaluated twice on the same env seeds: return-conditioned (w = the
preset's guidance, target 1 = the best return in the data) and unconditioned (w = 0, the same network). Reported per
arm, mean ± standard error over seeds: raw return, normalised score (100 = the noiseless scripted controller,
0 = uniform random actions; the dataset's own reference scores), the frequency shift of the plans (relative error of
their low-frequency energy against dataset windows, ours) and the smoothness of the executed actions::

    uv run python tools/repro/wf_vs_dd.py                     # 2 datasets × 4 arms × 3 seeds on 2 cores
    uv run python tools/repro/wf_vs_dd.py --datasets pendulum --arms wf,dd --seeds 1 --steps 300   # a quick look

Writes ``docs/results/wf_vs_dd_table.md`` and ``docs/results/wf_vs_dd.{json,png}``; runs go to ``outputs/wf_vs_dd/``
(and the offline datasets to ``$MINARI_DATASETS_PATH``, built on first use).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arms import run_parallel  # noqa: E402

from wfdiffuser.metrics import mean_and_stderr  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATASETS = {"pendulum": "pendulum", "inverted-pendulum": "inverted-pendulum"}  # name → wfdiffuser preset
ARMS: dict[str, list[str]] = {
    "wf": ["model.kind=wfdiffuser", "model.conditioner=state_embedding"],
    "wf_stft": ["model.kind=wfdiffuser", "model.conditioner=stft_xattn"],
    "dd": ["model.kind=dd"],
    "diffuser": ["model.kind=diffuser"],
}
METRICS = ("return_mean", "score_mean", "frequency_shift", "action_smoothness", "plan_smoothness")


def run_one(job: str, seed: int, args) -> None:
    import torch

    from shared.training import load_config

    from wfdiffuser.config import WFConfig
    from wfdiffuser.train import evaluate, load_data, load_run, make_windows, train

    torch.set_num_threads(1)
    dataset, arm = job.split(":")
    run_dir = Path(args.out) / f"{dataset}_{arm}_s{seed}"
    overrides = ARMS[arm] + [f"run.dir={run_dir}", f"train.seed={seed}", "run.evaluate=false", "run.progress=false",
                             f"eval.episodes={args.episodes}"]
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(WFConfig, None, overrides, preset=DATASETS[dataset])
    train(cfg)
    cfg, model = load_run(run_dir)
    episodes, info = load_data(cfg)
    data = make_windows(cfg, episodes)
    result = {"conditioned": evaluate(cfg, model, data, info)}
    uncond = load_config(WFConfig, None, overrides + ["plan.guidance=0"], preset=DATASETS[dataset])
    result["unconditioned"] = evaluate(uncond, model, data, info)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))


def summarise(out: Path, datasets: list[str], arms: list[str], seeds: list[int]) -> dict:
    summary: dict = {}
    for ds in datasets:
        summary[ds] = {}
        for arm in arms:
            res = [json.loads((out / f"{ds}_{arm}_s{s}" / "result.json").read_text()) for s in seeds]
            entry = {"seeds": seeds, "dataset_return_mean": res[0]["conditioned"]["dataset_return_mean"]}
            for mode in ("conditioned", "unconditioned"):
                entry[mode] = {k: mean_and_stderr([r[mode][k] for r in res])
                               for k in METRICS if k in res[0][mode]}
                entry[mode]["per_seed_return"] = [r[mode]["return_mean"] for r in res]
            summary[ds][arm] = entry
    return summary


def table(summary: dict) -> str:
    lines = []
    for ds, arms in summary.items():
        base = next(iter(arms.values()))["dataset_return_mean"]
        lines += [f"### {ds} (dataset mean return {base:.1f})", "",
                  "| arm | return (w>0) | score (w>0) | return (w=0) | score (w=0) | frequency shift | "
                  "action smoothness | plan smoothness |", "|---|---|---|---|---|---|---|---|"]
        for arm, e in arms.items():
            c, u = e["conditioned"], e["unconditioned"]

            def f(d: dict, k: str, p: int = 1) -> str:
                return f"{d[k][0]:.{p}f} ± {d[k][1]:.{p}f}" if k in d else "—"

            lines.append(f"| {arm} | {f(c, 'return_mean')} | {f(c, 'score_mean')} | {f(u, 'return_mean')} | "
                         f"{f(u, 'score_mean')} | {f(c, 'frequency_shift', 3)} | {f(c, 'action_smoothness', 3)} | "
                         f"{f(c, 'plan_smoothness', 4)} |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("score_mean", "normalised score (w>0)"), ("frequency_shift", "frequency shift of plans"),
              ("action_smoothness", "action 2nd-difference²")]
    fig, axes = plt.subplots(len(summary), len(panels), figsize=(4.2 * len(panels), 3.4 * len(summary)),
                             squeeze=False)
    for r, (ds, arms) in enumerate(summary.items()):
        for c, (key, label) in enumerate(panels):
            ax = axes[r][c]
            names = list(arms)
            means = [arms[a]["conditioned"][key][0] for a in names]
            errs = [arms[a]["conditioned"][key][1] for a in names]
            ax.bar(names, means, yerr=errs, capsize=4, color=["C0", "C1", "C2", "C3"][: len(names)])
            if key == "score_mean":
                unc = [arms[a]["unconditioned"][key][0] for a in names]
                ax.scatter(names, unc, color="k", marker="_", s=300, zorder=3, label="w = 0 (same network)")
                ax.legend(fontsize=7)
            ax.set_title(f"{ds}: {label}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="pendulum,inverted-pendulum", help=f"subset of {','.join(DATASETS)}")
    p.add_argument("--arms", default="wf,wf_stft,dd,diffuser", help=f"subset of {','.join(ARMS)}")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..n-1")
    p.add_argument("--steps", type=int, default=0, help="training steps (0 = the preset's)")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run and mode")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "wf_vs_dd"), help="run folders")
    p.add_argument("--results", default=str(ROOT / "docs" / "results"), help="where the table/JSON/plot go")
    p.add_argument("--resume", action="store_true", help="keep finished runs (result.json present)")
    p.add_argument("--one", nargs=2, metavar=("DATASET:ARM", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args)
        return
    datasets, arms = args.datasets.split(","), args.arms.split(",")
    bad = [d for d in datasets if d not in DATASETS] + [a for a in arms if a not in ARMS]
    if bad:
        p.error(f"unknown dataset/arm {bad}; datasets {list(DATASETS)}, arms {list(ARMS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    jobs = []
    for ds in datasets:
        for arm in arms:
            for s in seeds:
                run_dir = out / f"{ds}_{arm}_s{s}"
                if args.resume and (run_dir / "result.json").exists():
                    continue
                shutil.rmtree(run_dir, ignore_errors=True)
                jobs.append((f"{ds}:{arm}", s))
    run_parallel(__file__, jobs, sys.argv[1:], out, args.jobs, resume=False)
    summary = summarise(out, datasets, arms, seeds)
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "wf_vs_dd.json").write_text(json.dumps(summary, indent=2))
    plot(summary, res / "wf_vs_dd.png")
    text = table(summary)
    (res / "wf_vs_dd_table.md").write_text(header(args) + text + "\n")
    print(text)


def header(args) -> str:
    budget = f"{args.steps} training steps" if args.steps else "the presets' training budget"
    return ("# WFDiffuser vs Decision Diffuser vs Diffuser-style on our offline Pendulum / InvertedPendulum sets\n\n"
            f"`uv run python tools/repro/wf_vs_dd.py` ({args.seeds} training seeds per arm, "
            f"{args.episodes} evaluation episodes per run and mode on the same env seeds, "
            f"{budget} for every arm; "
            "mean ± standard error over seeds). w>0: return-conditioned (w = 1.2, target 1 = the best return in the "
            "data); w=0: the same network unconditioned. Score: 0 = uniform random actions, 100 = the noiseless "
            "scripted controller. Frequency shift: relative error of the plans' low-frequency energy against all "
            "dataset windows; smoothness: mean squared second difference of the executed actions (action) and of "
            "the planned states (plan); lower is smoother. Plot: [wf_vs_dd.png](wf_vs_dd.png).\n\n")


if __name__ == "__main__":
    main()
