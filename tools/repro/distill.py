"""Stage-2 self-distillation at small scale (card §3, §5 Table 6): linear-probe accuracy of the continuous encoder
features after stage 2, with vs without the distillation term λ_d‖Z_I − T(X)‖² to the frozen initial encoder.

The paper: training the encoder for reconstruction without distillation collapses understanding (MME-P 608.9 vs
1439.1); with it, understanding is kept at a small PSNR cost. Here: the ``tiny`` preset. For each seed one stage-1
run (encoder frozen) is branched into stage-2 arms that differ only in ``loss.distill_weight`` (1 vs 0) and the
encoder's learning rate (the paper's 1e-5, and 1e-4 so that the tiny encoder moves within a CPU budget)::

    uv run python tools/repro/distill.py                 # 3 seeds: 3 stage-1 runs, 12 stage-2 runs, 2 at a time

The probes: logistic regression on mean-pooled encoder tokens, (a) 18 colour × shape classes of single-object scenes
(1000 train / 500 test; in the encoder's own domain) and (b) scikit-learn's digits (1438 / 359, 10 classes; images
the encoder never saw, a more sensitive test of what the features still carry); "initial" is the committed encoder. Writes ``docs/results/vqrae_distill.{md,json,png}``;
runs go to ``outputs/distill/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from vqrae_runs import ROOT, fmt, mean_std, parallel, train

ARMS = {  # name: (distill_weight, encoder_lr)
    "distill, enc lr 1e-5": (1.0, 1e-5),
    "no distill, enc lr 1e-5": (0.0, 1e-5),
    "distill, enc lr 1e-4": (1.0, 1e-4),
    "no distill, enc lr 1e-4": (0.0, 1e-4),
}


def slug(name: str) -> str:
    return name.replace(", ", "_").replace(" ", "_")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--stage1", type=int, default=1000, help="stage-1 steps")
    p.add_argument("--stage2", type=int, default=1000, help="stage-2 steps")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run")
    p.add_argument("--out", default=str(ROOT / "outputs" / "distill"))
    p.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    out = Path(args.out)
    seeds = list(range(args.seeds))
    common = [f"train.stage1_steps={args.stage1}", *args.set]
    stage1 = parallel(seeds, lambda s: train(out / f"s{s}" / "stage1",
                                              [*common, f"train.seed={s}", "train.stage2_steps=0"]), args.jobs)

    def branch(job: tuple[int, str]) -> dict:
        s, arm = job
        dst = out / f"s{s}" / slug(arm)
        if not (dst / "eval.json").is_file():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(out / f"s{s}" / "stage1", dst)  # resume from the end of stage 1
            (dst / "eval.json").unlink()
        w, lr = ARMS[arm]
        return train(dst, [*common, f"train.seed={s}", f"train.stage2_steps={args.stage2}",
                           f"loss.distill_weight={w}", f"train.encoder_lr={lr}"])

    jobs = [(s, a) for a in ARMS for s in seeds]
    results = parallel(jobs, branch, args.jobs)
    for s, r in zip(seeds, stage1, strict=True):
        r["probe_digits"], r["probe_digits_initial"] = digits_probe(out / f"s{s}" / "stage1")
    for (s, a), r in zip(jobs, results, strict=True):
        r["probe_digits"], _ = digits_probe(out / f"s{s}" / slug(a))
    keys = ("probe", "probe_digits", "psnr", "ssim", "utilisation", "feature_drift")
    summary = {"stage1_steps": args.stage1, "stage2_steps": args.stage2, "seeds": seeds, "overrides": args.set,
               "probe_initial": [r["probe_initial"] for r in stage1],
               "probe_digits_initial": [r["probe_digits_initial"] for r in stage1],
               "after_stage1": {k: [r[k] for r in stage1] for k in keys},
               "arms": {a: {k: [r[k] for (s, b), r in zip(jobs, results, strict=True) if b == a] for k in keys}
                        for a in ARMS}}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "vqrae_distill.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# VQRAE stage-2 self-distillation, small scale", "",
        f"`uv run python tools/repro/distill.py` — the `tiny` preset; per seed one stage-1 run ({args.stage1} steps, "
        f"encoder frozen) branched into stage-2 arms of {args.stage2} steps; {len(seeds)} seeds, mean ± std. Probe: "
        "linear, 18 colour × shape classes, mean-pooled continuous encoder tokens. Feature drift "
        "‖Z_I − T(X)‖² / ‖T(X)‖² against the initial encoder T on held-out images.", "",
        f"Initial encoder: shapes probe {fmt(summary['probe_initial'], 3)}, digits probe "
        f"{fmt(summary['probe_digits_initial'], 3)}.", "",
        "| after | shapes probe (18 classes) | digits probe (10 classes) | PSNR (dB) | SSIM | utilisation | feature drift |",
        "|---|---|---|---|---|---|---|"]
    rows = [("stage 1 (encoder frozen)", summary["after_stage1"])] + [(f"stage 2: {a}", v)
                                                                      for a, v in summary["arms"].items()]
    for name, v in rows:
        lines.append(f"| {name} | {fmt(v['probe'], 3)} | {fmt(v['probe_digits'], 3)} | {fmt(v['psnr'])} | "
                     f"{fmt(v['ssim'], 3)} | "
                     f"{fmt(v['utilisation'], 1, pct=True)} | {fmt(v['feature_drift'], 4)} |")
    lines += ["", "![probe and PSNR per arm](vqrae_distill.png)", ""]
    (res / "vqrae_distill.md").write_text("\n".join(lines))
    plot(rows, summary, res / "vqrae_distill.png")
    print("\n".join(lines[4:-2]))


def digits_probe(run_dir: Path) -> tuple[float, float]:
    """Digits linear-probe accuracy of the run's encoder (EMA weights) and of its initial encoder."""
    from vqrae.data import digits_set
    from vqrae.evaluate import probe_accuracy
    from vqrae.train import load_run

    _, model, teacher = load_run(run_dir)
    train_set, test_set = digits_set("train"), digits_set("test")
    return probe_accuracy(model.encoder, train_set, test_set), probe_accuracy(teacher, train_set, test_set)


def plot(rows: list, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    names = [n.replace("stage 2: ", "") for n, _ in rows]
    for ax, key, label in ((axes[0], "probe", "shapes probe accuracy"), (axes[1], "probe_digits", "digits probe accuracy"),
                           (axes[2], "psnr", "PSNR (dB)")):
        for i, (_, v) in enumerate(rows):
            m, s = mean_std(v[key])
            ax.bar(i, m, yerr=s, color=f"C{i}", capsize=3, alpha=0.8)
            ax.scatter([i] * len(v[key]), v[key], s=8, color="k", zorder=3)
        if key.startswith("probe"):
            init = summary["probe_initial" if key == "probe" else "probe_digits_initial"]
            ax.axhline(mean_std(init)[0], color="k", ls="--", lw=1, label="initial encoder")
            ax.legend(fontsize=8)
            lo = min(min(v[key]) for _, v in rows)
            ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.set_xticks(range(len(rows)), names, rotation=25, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
