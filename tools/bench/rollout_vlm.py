"""Benchmark: batched rollout with log-probs (ours) vs a naive per-sample loop, same model, in one run.

Both sides produce the same thing for N questions × G completions: sampled completion tokens and the log-prob of
every sampled token at the sampling temperature (what GRPO needs as π_old).

* ``ours``: `mllm_rft.rollout.generate_with_logprobs` on left-padded batches of `--micro-batch` completions; the
  log-probs come from the logits `generate` already computed (no second forward pass).
* ``batched + forward``: the same batches, with the log-probs from a second teacher-forced forward pass (what
  frameworks that recompute π_old do); separates the gain of batching from that of reusing generate's logits.
* ``naive``: the loop a monolithic script writes: for each completion, `generate` on a batch of one, then a
  teacher-forced forward pass over prompt + completion for the log-probs.

Throughput is completions per second (median of `--repeats` timed calls after one warm-up; the sides alternate,
so drift on a shared machine hits all of them). The ratio ours / naive is the result::

    uv run python tools/bench/rollout_vlm.py                    # the committed tiny Qwen2-VL, CPU
    uv run python tools/bench/rollout_vlm.py --device cuda --dtype bfloat16 --model /path/to/Qwen2-VL-2B-Instruct

Writes docs/results/bench_rollout_vlm.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/shapes_vlm", help="local model folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--questions", type=int, default=8, help="questions per rollout")
    p.add_argument("--group", type=int, default=8, help="completions per question (G)")
    p.add_argument("--micro-batch", type=int, default=64, help="completions per generate call (ours)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_rollout_vlm"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mllm_rft.models import load_vlm
    from mllm_rft.prompts import encode_prompts
    from mllm_rft.rollout import generate_with_logprobs, sequence_logprobs
    from mllm_rft.tasks import make_split

    model, processor = load_vlm(args.model, dtype=args.dtype, device=args.device)
    model.eval()
    size = processor.image_processor.size.get("shortest_edge", 64 * 64) ** 0.5
    questions = make_split("counting", "test", args.questions, seed=0, image_size=int(size))
    samples = [q for q in questions for _ in range(args.group)]
    n = len(samples)
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=1.0)

    def batched(recompute: bool) -> int:
        tokens = 0
        for i in range(0, n, args.micro_batch):
            inputs = encode_prompts(processor, samples[i: i + args.micro_batch])
            r = generate_with_logprobs(model, inputs, seed=i, **kw)
            if recompute:
                sequence_logprobs(model, r, inputs)  # log-probs from a second forward pass
            tokens += int(r.completion_mask.sum())
        return tokens

    def naive() -> int:
        tokens = 0
        for i, s in enumerate(samples):
            inputs = encode_prompts(processor, [s])
            r = generate_with_logprobs(model, inputs, seed=i, **kw)
            sequence_logprobs(model, r, inputs)  # the separate forward pass a per-sample loop pays for
            tokens += int(r.completion_mask.sum())
        return tokens

    fns = {"ours": lambda: batched(False), "batched + forward": lambda: batched(True), "naive": naive}
    times: dict[str, list[float]] = {k: [] for k in fns}
    tokens: dict[str, int] = {}
    with torch.inference_mode():
        for rep in range(args.repeats + 1):
            for name, fn in fns.items():
                _sync(args.device)
                t0 = time.perf_counter()
                tokens[name] = fn()
                _sync(args.device)
                if rep:
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {k: {"seconds": med[k], "completions_per_s": n / med[k], "tokens_per_s": tokens[k] / med[k],
                "tokens": tokens[k]} for k in fns}
    ratio = rows["ours"]["completions_per_s"] / rows["naive"]["completions_per_s"]
    reuse = rows["ours"]["completions_per_s"] / rows["batched + forward"]["completions_per_s"]
    result = {"model": str(args.model), "device": args.device, "dtype": args.dtype, "threads": args.threads,
              "completions": n, "questions": args.questions, "group": args.group, "micro_batch": args.micro_batch,
              "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "rows": rows,
              "ratio_ours_over_naive": ratio, "ratio_ours_over_batched_forward": reuse, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine()}
    lines = ["| rollout | seconds (median) | completions/s | generated tokens/s |", "|---|---|---|---|"]
    for k in fns:
        r = rows[k]
        lines.append(f"| {k} | {r['seconds']:.2f} | {r['completions_per_s']:.1f} | {r['tokens_per_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    print(f"ratio ours / naive: {ratio:.1f}x ({n} completions of ≤ {args.max_new_tokens} tokens, {args.device}, "
          f"{args.dtype}, {args.threads} threads); ours / batched + forward: {reuse:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = (f"# Rollout throughput: batched generate with log-probs vs a per-sample loop\n\n"
          f"`{' '.join(['uv run python tools/bench/rollout_vlm.py', *_cli(args)])}`\n\n"
          f"Model `{args.model}`, {n} completions ({args.questions} counting questions × G {args.group}), "
          f"≤ {args.max_new_tokens} new tokens, temperature 1, {args.device} {args.dtype}, {args.threads} threads, "
          f"median of {args.repeats}.\n\n{table}\n\n**ours / naive: {ratio:.1f}×**; ours / batched + forward "
          f"(the part from reusing generate's logits): {reuse:.2f}×\n")
    out.with_suffix(".md").write_text(md)


def _cli(args) -> list[str]:
    defaults = {"device": "cpu", "dtype": "float32"}
    return [f"--{k} {v}" for k, v in defaults.items() if getattr(args, k) != v]


if __name__ == "__main__":
    main()
