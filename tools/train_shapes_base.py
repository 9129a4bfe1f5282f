"""Pretrain the tiny shapes-world text-to-image base (a pixel-space SD3 pipeline) on CPU.

The model is a diffusers ``SD3Transformer2DModel`` from a small config working directly on
32×32 RGB pixels (no VAE), conditioned by two tiny CLIP text encoders trained jointly from
scratch on a BPE tokenizer fitted to the shapes-world phrasing. It is trained with the
rectified-flow objective (shared_core.md §1): x_σ = (1−σ)·x0 + σ·x1, target v = x1 − x0, σ drawn
logit-normal as SD3 does, 10% empty prompts so classifier-free guidance works. Training pairs are
rendered on the fly from ``shared.shapes`` prompts.

Rebuild the committed checkpoint (about 30 minutes on a 2-core CPU)::

    uv run python tools/train_shapes_base.py --out assets/shapes_base

The result is saved with ``save_pretrained`` (safetensors, fp16 weights) and loads with
``shared.rollout.loading.load_pipeline``. The script ends by scoring the model GenEval-style on the fixed
shapes evaluation set and writes ``train_log.jsonl`` and a sample grid beside the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.shapes.prompts import generate_prompts
from shared.shapes.render import render
from shared.tiny import TinySD3Config, tiny_sd3_pipeline


@dataclass
class BaseTrainConfig:
    out: str = "assets/shapes_base"
    image_size: int = 32
    patch_size: int = 4
    num_layers: int = 4
    num_heads: int = 4
    head_dim: int = 32
    clip_hidden: int = 64
    shift: float = 1.0  # sampling schedule shift saved in the scheduler config (SD3 uses 3 at 1024 px)
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 200
    max_steps: int = 100_000
    max_minutes: float = 28.0
    cfg_dropout: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    threads: int = 2
    eval_per_tag: int = 16
    eval_steps: int = 20
    eval_guidance: float = 4.0


def render_batch(records: list[dict], size: int, rng: np.random.Generator) -> torch.Tensor:
    """Ground-truth images for ``records`` as a (B, 3, H, W) tensor in [−1, 1]."""
    arr = np.stack([np.asarray(render(r, size=size, rng=rng), dtype=np.float32) for r in records])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def build(cfg: BaseTrainConfig):
    tiny = TinySD3Config(
        image_size=cfg.image_size,
        vae_channels=None,
        patch_size=cfg.patch_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        joint_attention_dim=2 * cfg.clip_hidden,
        clip_hidden=cfg.clip_hidden,
        with_t5=False,
        shift=cfg.shift,
    )
    return tiny_sd3_pipeline(tiny, seed=cfg.seed)


def lr_at(step: int, cfg: BaseTrainConfig, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% over the expected number of steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(cfg: BaseTrainConfig) -> Path:
    from shared.demo import evaluate_base
    from shared.training import EMA

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pipe = build(cfg)
    modules = [pipe.transformer, pipe.text_encoder, pipe.text_encoder_2]
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train()
    ema = EMA(params, cfg.ema_decay, warmup=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    t0 = time.time()
    expected_total = cfg.max_steps
    step = 0
    while step < cfg.max_steps:
        elapsed = (time.time() - t0) / 60
        if elapsed > cfg.max_minutes:
            break
        if step == 50:  # estimate how many steps fit in the time budget, for the LR schedule
            expected_total = min(cfg.max_steps, int(50 * cfg.max_minutes / max(elapsed, 1e-6)))
        records = generate_prompts(cfg.batch_size, seed=int(rng.integers(2**31)))
        x0 = render_batch(records, cfg.image_size, rng)
        prompts = [("" if rng.random() < cfg.cfg_dropout else r["prompt"]) for r in records]
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False, max_sequence_length=16)
        sigma = torch.sigmoid(torch.randn(cfg.batch_size))  # logit-normal(0, 1), SD3's training density
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1)
        x = (1 - s) * x0 + s * noise
        v = pipe.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=embeds, pooled_projections=pooled, return_dict=False)[0]
        loss = F.mse_loss(v, noise - x0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, expected_total)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        if step % 50 == 0:
            rec = {"step": step, "loss": loss.item(), "grad_norm": gn.item(), "lr": opt.param_groups[0]["lr"], "minutes": (time.time() - t0) / 60}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        step += 1
    minutes = (time.time() - t0) / 60
    ema.copy_to(params)
    for m in modules:
        m.eval()
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), "steps_done": step, "train_minutes": round(minutes, 2)}, indent=2))
    log.close()
    print(f"trained {step} steps in {minutes:.1f} min; saved to {out}")
    summary = evaluate_base(out, per_tag=cfg.eval_per_tag, num_steps=cfg.eval_steps, guidance_scale=cfg.eval_guidance, out_dir=Path("outputs") / "shapes_base_eval")
    print(json.dumps(summary, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(BaseTrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    train(BaseTrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
