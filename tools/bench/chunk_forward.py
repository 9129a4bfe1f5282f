"""Benchmark: GCPO training time per trajectory with chunk-batched forwards vs one forward per step.

Same model, rollouts, chunks and seed; the only difference is ``train.batched_units``: with it, the c steps of a
chunk go through the transformer as one forward of batch c·B (chunk_grpo.md §4, as the authors' code does);
without it, c forwards of batch B. Both runs alternate iterations of the shared trainer and must log identical
losses and ratios (the math is the same; only the batching differs). Training time = iteration time − rollout
time, per trajectory; the table reports medians over iterations after the first and the ratio batched / per-step::

    uv run python tools/bench/chunk_forward.py                       # tiny SD3 pipeline, CPU
    uv run python tools/bench/chunk_forward.py --device cuda --image-size 64 --group-size 8

Writes ``docs/results/bench_chunk_forward.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run(model_dir: Path, run_dir: Path, args, batched: bool, pipeline) -> list[dict]:
    from shared.flow_grpo.config import RunConfig
    from shared.flow_grpo.train import train
    from shared.training import load_config, read_metrics

    overrides = [
        f"model.path={model_dir}", f"run.dir={run_dir}", "run.eval_every=0", "run.grids=false", "run.progress=false",
        "run.save_every=0", "reward.names=jpeg_compressibility", f"prompts.per_iteration={args.prompts}",
        f"sample.group_size={args.group_size}", f"sample.num_steps={sum(args.chunks)}", "sample.noise_level=0.7",
        f"sample.guidance_scale={args.guidance}", f"train.iterations={args.iterations}", "train.units=chunks",
        f"train.chunk_sizes={','.join(map(str, args.chunks))}", f"train.batched_units={batched}",
        f"model.cpu={args.device == 'cpu'}",
    ]
    train(load_config(RunConfig, overrides=overrides), pipeline=pipeline)
    return read_metrics(run_dir)


def main(argv: list[str] | None = None) -> None:
    from shared.tiny import TinySD3Config, tiny_sd3_pipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", default="2,3,4,7", help="chunk sizes, high noise first (GCPO's released list)")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale (1 = off, as in GCPO's FLUX runs)")
    p.add_argument("--iterations", type=int, default=4, help="iterations per mode; the first is warm-up")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "docs/results/bench_chunk_forward"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.chunks = [int(c) for c in args.chunks.split(",")]
    tiny = TinySD3Config(image_size=args.image_size, with_t5=False, num_layers=4, num_heads=4, head_dim=32,
                         joint_attention_dim=128, clip_hidden=64)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        base = tiny_sd3_pipeline(tiny)
        base.save_pretrained(model_dir)
        for batched in (True, False):
            records = run(model_dir, Path(tmp) / f"run_{batched}", args, batched, copy.deepcopy(base))
            per_traj = [(r["time_iteration_s"] - r["time_rollout_s"]) / (args.prompts * args.group_size)
                        for r in records[1:]]
            results["batched" if batched else "per_step"] = {
                "train_s_per_trajectory": statistics.median(per_traj), "all": per_traj,
                "policy_loss": [r["policy_loss"] for r in records], "ratio_max": [r["ratio_max"] for r in records]}
    b, s = results["batched"], results["per_step"]
    same = all(abs(x - y) <= 1e-5 * max(1.0, abs(y)) for x, y in zip(b["policy_loss"], s["policy_loss"], strict=True))
    ratio = b["train_s_per_trajectory"] / s["train_s_per_trajectory"]
    md = (f"# Chunk-batched forward vs one forward per step\n\nchunks {args.chunks} (T = {sum(args.chunks)}), "
          f"{args.prompts} prompts × G {args.group_size}, {args.image_size} px tiny SD3, CFG {args.guidance}, "
          f"device {args.device} ({platform.processor() or platform.machine()}), torch {torch.__version__}. "
          f"Command: `uv run python tools/bench/chunk_forward.py {' '.join(argv)}`.\n\n"
          "| mode | training s / trajectory (median) |\n|---|---|\n"
          f"| one forward per step | {s['train_s_per_trajectory']:.4f} |\n"
          f"| chunk-batched | {b['train_s_per_trajectory']:.4f} |\n\n"
          f"Ratio batched / per-step: **{ratio:.3f}**. Same losses in both modes: {same}.\n")
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "ratio": ratio, "same_losses": same,
                                                    **results}, indent=2))
    out.with_suffix(".md").write_text(md)
    if not same:
        raise SystemExit("the two modes logged different losses: the batched forward is wrong")


if __name__ == "__main__":
    main()
