"""Benchmark: one flow-GRPO iteration (rollout + training on the trained units) at SD3.5-Medium size.

The transformer is built from the published SD3.5-Medium ``transformer/config.json`` (24 MMDiT layers, 24 heads ×
64, dual attention in layers 0–12, RMS QK-norm; ≈2.5B parameters) with random weights, so nothing is downloaded.
The text encoders and VAE are small stand-ins with the right output shapes (pooled 2048, joint 4096, 16 latent
channels, 8× downsampling): their cost is not what this measures. Each configuration runs the shared trainer
(``shared.flow_grpo.train``) for ``--iterations`` GRPO iterations with the shapes/JPEG reward and reports, for the
last iteration:

* images/s = rollout images / iteration wall time (rollout + reward + training);
* peak GPU memory (``torch.cuda.max_memory_allocated``);
* model FLOP utilisation = model FLOPs of the iteration / (wall time × the accelerator's peak dense bf16 FLOP/s).
  Model FLOPs are counted with ``torch.utils.flop_counter`` on one sampling forward and one training forward +
  backward (without gradient checkpointing, so recomputation is not credited), times the number of each.

    uv run python tools/bench/gpu_flow.py --size tiny                      # CPU smoke run, seconds
    uv run python tools/bench/gpu_flow.py --size sd35m --device cuda       # H100/H200: LoRA and full, bf16, 512 px

Writes ``<out>.json`` and ``<out>.md`` (default ``docs/results/gpu_flow`` for sd35m, ``outputs/bench/gpu_flow_tiny``
for tiny).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

# stabilityai/stable-diffusion-3.5-medium transformer/config.json (published)
SD35M_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)
# peak dense bf16 tensor-core FLOP/s by device-name fragment (vendor datasheets)
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "4090": 165e12}


def build_pipeline(size: str, seed: int = 0):
    """A ``StableDiffusion3Pipeline`` whose transformer is SD3.5-M sized (``sd35m``) or tiny, random weights."""
    from diffusers import SD3Transformer2DModel

    from shared.tiny import TinySD3Config, tiny_sd3_pipeline, tiny_vae

    if size == "tiny":
        return tiny_sd3_pipeline(TinySD3Config(with_t5=False), seed=seed)
    pipe = tiny_sd3_pipeline(TinySD3Config(with_t5=False, max_length=77, clip_hidden=1024), seed=seed)
    torch.manual_seed(seed)
    pipe.transformer = SD3Transformer2DModel(**SD35M_TRANSFORMER)
    pipe.vae = tiny_vae(block_out_channels=(32, 32, 64, 64), latent_channels=16, sample_size=1024, seed=seed)
    pipe.vae_scale_factor = 8
    pipe.default_sample_size = SD35M_TRANSFORMER["sample_size"]
    return pipe


def count_flops(adapter, traj, unit_steps: int, guidance: float, train: bool) -> float:
    """FLOPs of one transformer evaluation on one sample (with CFG: both branches), forward (+ backward if train)."""
    from torch.utils.flop_counter import FlopCounterMode

    from shared.rollout import SamplerConfig, step_log_prob

    rows = steps = torch.zeros(unit_steps, dtype=torch.long)  # sample 0's first transition, unit_steps times
    cfg = SamplerConfig(num_steps=traj.num_steps, noise_level=0.7, guidance_scale=guidance, height=traj.height,
                        width=traj.width)
    counter = FlopCounterMode(display=False)
    with counter, torch.set_grad_enabled(train):
        out = step_log_prob(adapter, traj, steps, cfg, rows=rows)
        if train:
            out.log_prob.sum().backward()
    adapter.transformer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / unit_steps


def run_one(args, mode: str) -> dict:
    from shared.flow_grpo.config import RunConfig
    from shared.flow_grpo.train import train
    from shared.rollout import SamplerConfig, sample
    from shared.training import load_config, read_metrics

    device = torch.device(args.device)
    pipe = build_pipeline(args.size)
    resolution = args.resolution or (512 if args.size == "sd35m" else 32)
    units = args.num_steps - 1 if args.num_steps > 1 else 1
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        pipe.save_config(model_dir)  # model_index.json: what model.path validation reads; weights stay in memory
        overrides = [
            f"model.path={model_dir}", f"run.dir={Path(tmp) / 'run'}", "run.eval_every=0", "run.grids=false",
            "run.progress=false", "run.save_every=0", f"model.mixed_precision={args.precision}",
            f"model.gradient_checkpointing={args.checkpointing}", f"model.cpu={device.type == 'cpu'}",
            f"reward.names={args.reward}", f"prompts.per_iteration={args.prompts}", f"sample.group_size={args.group_size}",
            f"sample.num_steps={args.num_steps}", f"sample.resolution={resolution}", f"sample.guidance_scale={args.guidance}",
            f"sample.micro_batch_size={args.micro_batch}", f"train.iterations={args.iterations}",
            f"train.fraction={units / args.num_steps}", "train.units=in_order",
            f"lora.rank={args.lora_rank if mode == 'lora' else 0}", f"lora.alpha={2 * args.lora_rank}",
        ]
        if args.reward == "shapes":
            overrides.append("reward.kwargs={\"shapes\": {\"partial_credit\": true}}")
        cfg = load_config(RunConfig, overrides=overrides)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        train(cfg, pipeline=pipe)
        wall = time.perf_counter() - t0
        last = read_metrics(Path(tmp) / "run")[-1]
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    # FLOPs, counted on the trained transformer (LoRA adapters included) in the run's precision
    from shared.rollout import adapter_for

    adapter = adapter_for(pipe)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision, torch.float32)
    scfg = SamplerConfig(num_steps=args.num_steps, noise_level=0.7, guidance_scale=args.guidance, height=resolution,
                         width=resolution)
    with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype != torch.float32):
        traj = sample(adapter, ["a photo of a red circle"], scfg, generator=torch.Generator().manual_seed(0))
        ckpt = getattr(pipe.transformer, "gradient_checkpointing", False)
        if ckpt:
            pipe.transformer.disable_gradient_checkpointing()
        fwd = count_flops(adapter, traj, 1, args.guidance, train=False)
        fwd_bwd = count_flops(adapter, traj, 1, args.guidance, train=True)
        if ckpt:
            pipe.transformer.enable_gradient_checkpointing()
    n_images = args.prompts * args.group_size
    it_time = last["time_iteration_s"]
    flops = n_images * (args.num_steps * fwd + units * fwd_bwd)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), float("nan")) if device.type == "cuda" else float("nan")
    params = sum(p.numel() for p in pipe.transformer.parameters())
    trainable = sum(p.numel() for p in pipe.transformer.parameters() if p.requires_grad)
    return {
        "mode": mode, "size": args.size, "device": name, "precision": args.precision, "resolution": resolution,
        "images": n_images, "num_steps": args.num_steps, "trained_units": units, "guidance": args.guidance,
        "transformer_params": params, "trainable_params": trainable, "gradient_checkpointing": args.checkpointing,
        "iteration_s": it_time, "rollout_s": last["time_rollout_s"], "images_per_s": n_images / it_time,
        "peak_memory_gib": peak_mem, "flops_forward_per_sample": fwd, "flops_train_per_sample": fwd_bwd,
        "model_tflops_per_s": flops / it_time / 1e12, "mfu": flops / it_time / peak, "wall_s_all_iterations": wall,
        "reward_mean": last["reward_mean"],
    }


def table(rows: list[dict]) -> str:
    head = ("| mode | trainable params | images | iteration s | images/s | peak mem GiB | model TFLOP/s | MFU |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['mode']} | {r['trainable_params'] / 1e6:.1f}M | {r['images']} | {r['iteration_s']:.2f} | "
        f"{r['images_per_s']:.3f} | {r['peak_memory_gib']:.1f} | {r['model_tflops_per_s']:.2f} | {r['mfu']:.3f} |\n"
        for r in rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("tiny", "sd35m"), default="tiny", help="transformer size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", default="lora,full", help="comma list of lora / full")
    p.add_argument("--precision", choices=("no", "fp16", "bf16"), default=None, help="default bf16 on GPU, no on CPU")
    p.add_argument("--resolution", type=int, default=0, help="pixels (default 512 for sd35m, 32 for tiny)")
    p.add_argument("--num-steps", type=int, default=10, help="sampling steps T (trained: first T−1, Flow-GRPO)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per iteration")
    p.add_argument("--group-size", type=int, default=4, help="images per prompt")
    p.add_argument("--micro-batch", type=int, default=0, help="rollout/training micro-batch (0 = all)")
    p.add_argument("--guidance", type=float, default=4.5, help="CFG scale in sampling and training")
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True,
                   help="gradient checkpointing in training")
    p.add_argument("--iterations", type=int, default=2, help="GRPO iterations; the last one is reported")
    p.add_argument("--reward", default="jpeg_compressibility", help="a registered offline reward")
    p.add_argument("--out", default="", help="output prefix for .json/.md")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.device.startswith("cuda") else "no"
    out = Path(args.out or (ROOT / ("docs/results/gpu_flow" if args.size == "sd35m" else "outputs/bench/gpu_flow_tiny")))
    rows = [run_one(args, m) for m in args.modes.split(",")]
    md = (f"# One flow-GRPO iteration, {args.size} transformer, {rows[0]['device']}, {args.precision}, "
          f"{rows[0]['resolution']} px\n\n{rows[0]['images']} images ({args.prompts} prompts × G {args.group_size}), "
          f"T = {args.num_steps} steps, {rows[0]['trained_units']} trained, CFG {args.guidance}, "
          f"{'with' if args.checkpointing else 'without'} gradient checkpointing. Command: "
          f"`uv run python tools/bench/gpu_flow.py {' '.join(argv)}`.\n\n" + table(rows))
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
