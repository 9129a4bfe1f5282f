"""Pretrain the shapes-world masked text-to-image base (mask_grpo.md §10) on one CPU thread.

1. Fit the weight-free patch codec (`mask_grpo.backends.shapes_tokenizer`): K = 1 + 6·P codes of 4×4 patches.
2. Train the tiny omni-attention transformer (`mask_grpo.backends.shapes`) with the MaskGIT objective: for each
   image draw r ~ U(0, 1), mask ⌈N·cos(π r / 2)⌉ of its N codes (at least one) with [MASK] = K, and minimise the
   cross-entropy of the true codes at the masked positions. Pairs are rendered on the fly from
   `shared.shapes.prompts.generate_prompts` over all six GenEval tags; 10 % of prompts are replaced by "" so that
   classifier-free guidance works. AdamW, linear warm-up then cosine decay to 10 %, EMA of the weights, seeded.
3. Score the EMA model GenEval-style on the fixed shapes evaluation set (`shared.shapes.eval_prompts`, verified by
   `shared.shapes.geneval_score`) with the recording unmasking sampler `mask_grpo.sampler.sample` for a small grid
   of sampler settings (steps, CFG scale, choice-temperature form), and save a sample grid with the best setting.

Rebuild the committed checkpoint (≈ 20 minutes on one CPU thread, see train_config.json for the measured time)::

    uv run python tools/train_shapes_masked_base.py --out assets/shapes_masked_base

Writes to --out: config.json, model.safetensors (fp16 unless --save-dtype float32), codebook.safetensors,
train_config.json, train_log.jsonl (training records, then one "eval" record per sampler setting), eval.json
(the same scores as one table, the recommended setting first) and samples.png.
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

from mask_grpo.backends.shapes import ShapesMaskedPolicy
from mask_grpo.backends.shapes_tokenizer import PatchCodec, PatchCodecConfig
from shared.shapes.prompts import generate_prompts
from shared.shapes.render import render

RL_TAGS = ("single_object", "colors", "counting")  # the tags the shapes RL preset trains on


@dataclass
class MaskedBaseTrainConfig:
    out: str = "assets/shapes_masked_base"
    num_patterns: int = 96
    width: int = 128
    depth: int = 3
    heads: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    max_steps: int = 4000  # the LR schedule spans these; seeded, so the run is reproducible whatever the CPU speed
    max_minutes: float = 25.0  # safety stop only (the brief's budget on one thread)
    cfg_dropout: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0
    threads: int = 1
    log_every: int = 50
    save_dtype: str = "float16"
    eval_per_tag: int = 16
    eval_samples: int = 4
    eval_steps: str = "8,16"
    eval_cfg: str = "1,3"
    eval_temperatures: str = "showo,maskgit,amused"
    eval_cfg_sweep: str = "2,4,5"
    grid_samples: int = 4

    def __post_init__(self) -> None:
        if self.save_dtype not in ("float16", "float32"):
            raise ValueError(f"save_dtype={self.save_dtype!r}: expected float16 or float32")
        if not 0 <= self.cfg_dropout < 1:
            raise ValueError(f"cfg_dropout={self.cfg_dropout}: expected a fraction in [0, 1)")


def render_batch(records: list[dict], rng: np.random.Generator, size: int = 32) -> torch.Tensor:
    """Ground-truth images (B, 3, S, S) in [0, 1]."""
    arr = np.stack([np.asarray(render(r, size=size, rng=rng), dtype=np.float32) for r in records]) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


def mask_tokens(codes: torch.Tensor, mask_id: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskGIT masking: per row r ~ U(0,1), n = max(1, ⌈N·cos(π r / 2)⌉) random positions set to `mask_id`.
    Returns (masked tokens, bool mask of the masked positions)."""
    b, n = codes.shape
    r = torch.rand(b, generator=gen)
    k = torch.clamp(torch.ceil(n * torch.cos(math.pi / 2 * r)), min=1).long()
    rank = torch.rand(b, n, generator=gen).argsort(dim=1).argsort(dim=1)  # a random permutation's ranks
    masked = rank < k[:, None]
    return torch.where(masked, torch.full_like(codes, mask_id), codes), masked


def lr_at(step: int, cfg: MaskedBaseTrainConfig, total: int) -> float:
    """Linear warm-up, then cosine decay to 10 % at `total` steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def evaluate(policy: ShapesMaskedPolicy, steps: int, cfg_scale: float, temperature: str, *, per_tag: int = 16,
             samples: int = 4, seed: int = 0, tau0: float = 1.0) -> tuple[dict, torch.Tensor, list[dict]]:
    """GenEval-style summary of `samples` images per fixed eval prompt under one sampler setting (images returned)."""
    from mask_grpo.sampler import SamplerConfig, sample  # the recording sampler (lazy: written in parallel)
    from shared.shapes import eval_prompts, geneval_score

    records = [r for r in eval_prompts(per_tag=per_tag) for _ in range(samples)]
    config = SamplerConfig(steps=steps, schedule="cosine", temperature=temperature, tau0=tau0, cfg_scale=cfg_scale)
    traj = sample(policy, [r["prompt"] for r in records], config, generator=torch.Generator().manual_seed(seed),
                  record=False)
    images = policy.decode(traj.tokens)
    summary = geneval_score(images, records)
    rl = float(np.mean([summary["per_tag"][t] for t in RL_TAGS]))
    out = {"steps": steps, "cfg_scale": cfg_scale, "temperature": temperature, "tau0": tau0,
           "overall": round(summary["overall"], 4), "rl_tags_mean": round(rl, 4),
           "per_tag": {t: round(v, 4) for t, v in summary["per_tag"].items()}, "images": len(records)}
    return out, images, records


def evaluate_grid(policy: ShapesMaskedPolicy, cfg: MaskedBaseTrainConfig, log) -> list[dict]:
    """Every (steps, cfg, temperature form) of the config's grid, then the `eval_cfg_sweep` scales at the first
    steps and temperature form; logged as "eval" records."""
    from shared.training.accelerate_setup import progress

    steps_, temps = [int(s) for s in cfg.eval_steps.split(",")], cfg.eval_temperatures.split(",")
    settings = [(s, float(w), t) for s in steps_ for w in cfg.eval_cfg.split(",") for t in temps]
    settings += [(steps_[0], float(w), temps[0]) for w in cfg.eval_cfg_sweep.split(",") if w]
    settings = list(dict.fromkeys(settings))
    rows = []
    for steps, w, temp in progress(settings, desc="eval", disable=False):
        row, _, _ = evaluate(policy, steps, w, temp, per_tag=cfg.eval_per_tag, samples=cfg.eval_samples,
                             seed=cfg.seed)
        rows.append(row)
        log.write(json.dumps({"event": "eval", **row}) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)
    return rows


def save_grid(policy: ShapesMaskedPolicy, best: dict, path: Path, samples: int, seed: int) -> None:
    """4 eval prompts per tag × `samples` images, captioned with the prompt and the verifier's verdict."""
    from shared.shapes import render_grid

    _, images, records = evaluate(policy, best["steps"], best["cfg_scale"], best["temperature"], per_tag=4,
                                  samples=samples, seed=seed, tau0=best["tau0"])
    render_grid(records, list(images), cols=8, scale=4).save(path)


def train(cfg: MaskedBaseTrainConfig) -> Path:
    from shared.training import EMA
    from shared.training.accelerate_setup import progress

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    codec = PatchCodec.fit(PatchCodecConfig(num_patterns=cfg.num_patterns, seed=cfg.seed))
    policy = ShapesMaskedPolicy.build(codec, width=cfg.width, depth=cfg.depth, heads=cfg.heads, seed=cfg.seed)
    model = policy.trainable()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    print(f"codebook K={policy.codebook_size}, N={policy.grid[0] * policy.grid[1]}, parameters {n_params:,}")
    ema = EMA(params, cfg.ema_decay, warmup=True)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    model.train()
    t0 = time.time()
    step, loss_avg, acc_avg = 0, None, None
    bar = progress(total=cfg.max_steps, desc="pretrain", disable=False, mininterval=5.0)
    while step < cfg.max_steps:
        if (time.time() - t0) / 60 > cfg.max_minutes:
            print(f"stopping at step {step}: --max-minutes {cfg.max_minutes} reached before --max-steps")
            break
        records = generate_prompts(cfg.batch_size, seed=int(rng.integers(2**31)))
        codes = codec.encode(render_batch(records, rng))
        prompts = ["" if rng.random() < cfg.cfg_dropout else r["prompt"] for r in records]
        inputs, masked = mask_tokens(codes, policy.mask_id, gen)
        logits = policy.logits(inputs, policy.encode(prompts))
        loss = F.cross_entropy(logits[masked], codes[masked])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, cfg.max_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        acc = (logits[masked].argmax(-1) == codes[masked]).float().mean().item()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        acc_avg = acc if acc_avg is None else 0.98 * acc_avg + 0.02 * acc
        if step % cfg.log_every == 0:
            rec = {"event": "train", "step": step, "loss": round(loss.item(), 4), "loss_ema": round(loss_avg, 4),
                   "masked_acc": round(acc_avg, 4), "grad_norm": round(gn.item(), 4),
                   "lr": opt.param_groups[0]["lr"], "minutes": round((time.time() - t0) / 60, 3)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc_avg:.3f}")
        bar.update(1)
        step += 1
    bar.close()
    minutes = (time.time() - t0) / 60
    ema.copy_to(params)
    model.eval()
    dtype = torch.float16 if cfg.save_dtype == "float16" else torch.float32
    policy.save_pretrained(out, dtype=dtype)
    policy = ShapesMaskedPolicy.from_pretrained(out)  # evaluate exactly what was saved
    print(f"trained {step} steps in {minutes:.1f} min; saved to {out}")
    t1 = time.time()
    rows = evaluate_grid(policy, cfg, log)
    best = max(rows, key=lambda r: (r["steps"] == 8, r["overall"]))  # recommended: best overall at 8 steps
    table = {"recommended": best, "settings": sorted(rows, key=lambda r: -r["overall"]),
             "eval_prompts": f"shared.shapes.eval_prompts(per_tag={cfg.eval_per_tag}) × {cfg.eval_samples} samples",
             "rl_tags": list(RL_TAGS)}
    (out / "eval.json").write_text(json.dumps(table, indent=2) + "\n")
    save_grid(policy, best, out / "samples.png", cfg.grid_samples, cfg.seed)
    (out / "train_config.json").write_text(json.dumps(
        {**asdict(cfg), "steps_done": step, "train_minutes": round(minutes, 2), "parameters": n_params,
         "codebook_size": policy.codebook_size, "eval_minutes": round((time.time() - t1) / 60, 2),
         "torch": torch.__version__}, indent=2) + "\n")
    log.close()
    print("recommended:", json.dumps(best))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(MaskedBaseTrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    train(MaskedBaseTrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
