"""Benchmark: our rollout sampler (SDE steps + per-step log-probs + trajectory record) vs the plain
diffusers pipeline call, on the same tiny model, batch and step count, in one run.

Both sides encode the prompts, run the transformer over the same number of steps and decode with the
VAE; ours also draws SDE noise, computes log-probs in float32 and stores every latent. Calls alternate
(pipeline, ours, pipeline, …) after warm-up so drift on a shared machine hits both; the table reports
medians and the ratio ours / pipeline (goal ≤ 1.10)::

    uv run python tools/bench/rollout.py                      # SD3 (CFG 4.5) and Flux, CPU
    uv run python tools/bench/rollout.py --device cuda --dtype bfloat16 --batch 32

Writes ``docs/results/bench_rollout.json`` and ``docs/results/bench_rollout.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from shared.rollout import SamplerConfig, adapter_for, sample
from shared.tiny import TinyFluxConfig, tiny_flux_pipeline, tiny_sd3_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_family(family: str, *, batch: int, steps: int, repeats: int, warmup: int, device: str, dtype: torch.dtype) -> dict:
    if family == "sd3":
        pipe, guidance, kind, level = tiny_sd3_pipeline(), 4.5, "flow_grpo", 0.7
    else:
        pipe, guidance, kind, level = tiny_flux_pipeline(TinyFluxConfig(guidance_embeds=True)), 3.5, "dance", 0.3
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a photo of a red circle left of a blue square"] * batch
    adapter = adapter_for(pipe) if family == "sd3" else adapter_for(pipe, distilled_guidance=guidance)
    cfg = SamplerConfig(num_steps=steps, kind=kind, noise_level=level, guidance_scale=guidance if family == "sd3" else 1.0, height=32, width=32)

    def run_pipeline() -> None:
        pipe(prompts, num_inference_steps=steps, height=32, width=32, guidance_scale=guidance, max_sequence_length=16,
             output_type="pt", generator=torch.Generator().manual_seed(0))

    def run_ours() -> None:
        sample(adapter, prompts, cfg, generator=torch.Generator().manual_seed(0))

    times: dict[str, list[float]] = {"pipeline": [], "ours": []}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for name, fn in (("pipeline", run_pipeline), ("ours", run_ours)):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "family": family,
        "cfg": guidance if family == "sd3" else "distilled",
        "sde": f"{kind} {level}",
        "batch": batch,
        "steps": steps,
        "pipeline_s": med["pipeline"],
        "ours_s": med["ours"],
        "ratio": med["ours"] / med["pipeline"],
        "pipeline_all_s": times["pipeline"],
        "ours_all_s": times["ours"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["sd3", "flux"], choices=["sd3", "flux"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_rollout"), help="output path without extension")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = [bench_family(f, batch=args.batch, steps=args.steps, repeats=args.repeats, warmup=args.warmup, device=args.device, dtype=dtype)
            for f in args.families]
    header = "| model | CFG | SDE | batch | steps | pipeline (s) | ours (s) | ratio |\n|---|---|---|---|---|---|---|---|"
    lines = [f"| tiny {r['family']} | {r['cfg']} | {r['sde']} | {r['batch']} | {r['steps']} | {r['pipeline_s']:.4f} | {r['ours_s']:.4f} | {r['ratio']:.3f} |" for r in rows]
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    table = "\n".join([header, *lines])
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": device, "dtype": args.dtype, "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
            "python": platform.python_version(), "goal": "ratio <= 1.10"}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(
        "# Rollout benchmark: our sampler vs the diffusers pipeline call\n\n"
        f"Command: `uv run python tools/bench/rollout.py` · device {device} · {args.dtype} · {args.threads} thread(s) · "
        f"median of {args.repeats} alternating calls after {args.warmup} warm-up.\n\n"
        "Ours = SDE steps with float32 log-probs and the full trajectory record; pipeline = `pipe(...)` with the same "
        "model, prompts, batch, steps and decoding. Goal: ratio ≤ 1.10.\n\n" + table + "\n"
    )
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
