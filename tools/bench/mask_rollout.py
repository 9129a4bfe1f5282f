"""Benchmark: the recording unmasking sampler vs the plain sampler on the same model, in one run.

Rows (same model, prompts, batch, steps and generator seed on both sides; calls alternate after warm-up so drift
on a shared machine hits both; medians):

* ``shapes``: the committed shapes-world masked base (assets/shapes_masked_base): our sampler with recording (the
  per-step drawn tokens, κ_t and the three transition log-probabilities: what GRPO needs) vs ``record=False`` (the
  same draws, nothing kept);
* ``amused``: the tiny diffusers aMUSEd pipeline (``mask_grpo.backends.amused.tiny_amused_pipeline``, 16×16 token
  grid): ours with recording vs diffusers' own ``AmusedPipeline(..., output_type="latent")``, which it reproduces
  token for token (tests/test_amused_backend.py), and vs ours plain.

The ratio recording / plain is the cost of recording; the goal is ≤ 1.10 on the shapes base::

    uv run python tools/bench/mask_rollout.py
    uv run python tools/bench/mask_rollout.py --device cuda --batch 64

Writes ``docs/results/bench_mask_rollout.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fns: dict, repeats: int, warmup: int, device: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for name, fn in fns.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return times


def bench_shapes(args) -> dict:
    from mask_grpo.backends.shapes import ShapesMaskedPolicy
    from mask_grpo.sampler import SamplerConfig, sample
    from shared.shapes import eval_prompts

    policy = ShapesMaskedPolicy.from_pretrained(args.model).to(args.device)
    prompts = [r["prompt"] for r in eval_prompts(per_tag=args.batch, tags=["counting"])][: args.batch]
    cfg = SamplerConfig(steps=args.steps, cfg_scale=args.cfg)
    cond = policy.encode(prompts)
    uncond = policy.encode([""] * len(prompts)) if args.cfg != 1 else None
    fns = {name: (lambda rec=rec: sample(policy, None, cfg, cond=cond, uncond=uncond, record=rec,
                                         generator=torch.Generator().manual_seed(0)))
           for name, rec in (("plain", False), ("recording", True))}
    times = _time(fns, args.repeats, args.warmup, args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": "shapes", "batch": len(prompts), "steps": args.steps, "cfg": args.cfg,
            "tokens": policy.grid[0] * policy.grid[1], "codebook": policy.codebook_size, **{f"{k}_s": v for k, v in
                                                                                              med.items()},
            "ratio_recording_plain": med["recording"] / med["plain"], "all_s": times}


def bench_amused(args) -> dict:
    from mask_grpo.backends.amused import AmusedPolicy, tiny_amused_pipeline
    from mask_grpo.sampler import SamplerConfig, sample

    pipe = tiny_amused_pipeline(grid=16).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    policy = AmusedPolicy.from_pipeline(pipe)
    prompts = ["a photo of a red circle"] * args.batch
    cfg = SamplerConfig(steps=args.steps, temperature="amused", amused_range=(2.0, 0.0), cfg_scale=1.0)

    fns = {
        "pipeline": lambda: pipe(prompts, num_inference_steps=args.steps, guidance_scale=1.0, output_type="latent",
                                 generator=torch.Generator().manual_seed(0)),
        "plain": lambda: sample(policy, prompts, cfg, generator=torch.Generator().manual_seed(0), record=False),
        "recording": lambda: sample(policy, prompts, cfg, generator=torch.Generator().manual_seed(0)),
    }
    times = _time(fns, args.repeats, args.warmup, args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": "amused (tiny)", "batch": args.batch, "steps": args.steps, "cfg": 1.0,
            "tokens": policy.grid[0] * policy.grid[1], "codebook": policy.codebook_size,
            **{f"{k}_s": v for k, v in med.items()}, "ratio_recording_plain": med["recording"] / med["plain"],
            "ratio_recording_pipeline": med["recording"] / med["pipeline"], "all_s": times}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "assets/shapes_masked_base"), help="shapes masked base folder")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--cfg", type=float, default=1.0, help="CFG scale of the shapes row (1 = off)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs/results/bench_mask_rollout"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [bench_shapes(args), bench_amused(args)]
    lines = ["| model | tokens × codes | batch | steps | CFG | diffusers pipeline (s) | ours plain (s) | "
             "ours recording (s) | recording / plain | recording / pipeline |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pipe = f"{r['pipeline_s']:.4f}" if "pipeline_s" in r else "—"
        vs_pipe = f"{r['ratio_recording_pipeline']:.3f}" if "ratio_recording_pipeline" in r else "—"
        lines.append(f"| {r['model']} | {r['tokens']} × {r['codebook']} | {r['batch']} | {r['steps']} | {r['cfg']} | "
                     f"{pipe} | {r['plain_s']:.4f} | {r['recording_s']:.4f} | {r['ratio_recording_plain']:.3f} | "
                     f"{vs_pipe} |")
    md = (f"# Recording unmasking sampler vs the plain sampler\n\nCommand: `uv run python tools/bench/mask_rollout.py "
          f"{' '.join(argv)}` · device {args.device} ({platform.processor() or platform.machine()}) · float32 · "
          f"{args.threads} thread(s) · torch {torch.__version__} · median of {args.repeats} alternating calls after "
          f"{args.warmup} warm-up.\n\nRecording keeps the drawn tokens of every step, κ_t and the p_θ1 / p_θ2 / "
          "AR-style log-probabilities (float32); plain is `record=False` (same draws and tokens). Goal: recording / "
          "plain ≤ 1.10.\n\n" + "\n".join(lines) + "\n")
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(md)
    return rows


if __name__ == "__main__":
    main()
