"""Benchmark: flow-GRPO update time with and without the rows whose advantage is exactly 0.

A group whose G rewards are all equal gets advantage 0 on every row (under the batch-std, group-std and slas
advantages alike), and without a KL term such a row's loss −A·(clipped ratio) has a zero gradient. The shared
trainer leaves these rows out of the update (``train.skip_zero_advantage``, default on). This script runs the same
preset twice from the same seed, once with and once without, and reports the update time per iteration (iteration
time − rollout time; medians over the iterations after the first), the ratio, and the fraction of rows left out.
The two runs' first rollouts are identical and their first updates must log the same loss (to float rounding: the
forwards run on fewer rows, so the kernels may sum in another order)::

    uv run python tools/bench/skip_zero_advantage.py                   # shared's shapes preset, shipped base, CPU
    uv run python tools/bench/skip_zero_advantage.py --iterations 6 --set sample.micro_batch_size=32

Writes ``docs/results/bench_skip_zero_advantage.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run(run_dir: Path, args, skip: bool) -> list[dict]:
    from shared.flow_grpo.config import RunConfig
    from shared.flow_grpo.train import train
    from shared.training import load_config, read_metrics

    overrides = [f"run.dir={run_dir}", "run.eval_every=0", "run.grids=false", "run.progress=false",
                 "run.save_every=0", f"train.iterations={args.iterations}", f"train.skip_zero_advantage={skip}",
                 f"model.path={ROOT / args.model}", *args.set]
    train(load_config(RunConfig, preset=args.preset, overrides=overrides))
    return read_metrics(run_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes", help="shared flow-GRPO preset (needs kl_beta = 0 to skip rows)")
    p.add_argument("--model", default="assets/shapes_base", help="model.path of the preset (relative: to the "
                   "repository root)")
    p.add_argument("--iterations", type=int, default=4, help="iterations per mode; the first is warm-up")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--out", default="docs/results/bench_skip_zero_advantage", help="output stem (.json, .md); "
                   "relative: to the repository root")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.iterations < 2:
        p.error("--iterations must be >= 2 (the first is warm-up)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for skip in (True, False):
            records = run(Path(tmp) / f"run_{skip}", args, skip)
            update = [r["time_iteration_s"] - r["time_rollout_s"] for r in records]
            results["skip" if skip else "all_rows"] = {
                "update_s_median": statistics.median(update[1:]), "update_s": update,
                "iteration_s_median": statistics.median([r["time_iteration_s"] for r in records[1:]]),
                "rows_skipped": [r.get("rows_skipped", 0.0) for r in records],
                "zero_std_ratio": [r["zero_std_ratio"] for r in records],
                "reward_mean": [r["reward_mean"] for r in records], "policy_loss": [r["policy_loss"] for r in records]}
    s, a = results["skip"], results["all_rows"]
    same_rollout = s["reward_mean"][0] == a["reward_mean"][0]
    loss_diff = abs(s["policy_loss"][0] - a["policy_loss"][0])
    same_loss = loss_diff <= 1e-5 * max(1.0, abs(a["policy_loss"][0]))
    ratio, it_ratio = s["update_s_median"] / a["update_s_median"], s["iteration_s_median"] / a["iteration_s_median"]
    skipped = statistics.mean(s["rows_skipped"])
    md = (f"# Leaving zero-advantage rows out of the flow-GRPO update\n\npreset `{args.preset}` ({args.model}), "
          f"{args.iterations} iterations per mode, overrides {args.set or 'none'}, CPU "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch "
          f"{torch.__version__}. Command: `uv run python tools/bench/skip_zero_advantage.py {' '.join(argv)}`.\n\n"
          "| mode | update s / iteration (median) | iteration s (median) | rows left out (mean) |\n|---|---|---|---|\n"
          f"| all rows | {a['update_s_median']:.2f} | {a['iteration_s_median']:.2f} | 0 |\n"
          f"| skip A = 0 | {s['update_s_median']:.2f} | {s['iteration_s_median']:.2f} | {skipped:.3f} |\n\n"
          f"Ratio skip / all rows: update **{ratio:.3f}**, whole iteration **{it_ratio:.3f}**. Same first rollout: "
          f"{same_rollout}; first update's loss differs by {loss_diff:.2e} (same to 1e-5: {same_loss}).\n")
    print(md)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "update_ratio": ratio,
                                                    "iteration_ratio": it_ratio, "same_first_rollout": same_rollout,
                                                    "first_loss_diff": loss_diff, **results}, indent=2))
    out.with_suffix(".md").write_text(md)
    if not (same_rollout and same_loss):
        raise SystemExit("the two runs' first rollout or first loss differ: leaving rows out changed the update")


if __name__ == "__main__":
    main()
