"""Does one GRPO step of the masked shapes base go uphill? A finite-difference check per log-prob kind.

For each setting ``KIND:CFG:STEPS`` (KIND p1 | p2 | ar; CFG the guidance in sampling and training; STEPS ``all`` or
comma-separated trained iterations), ``--batches`` independent rollout batches (``--prompts`` shapes prompts × G,
group advantages) each give one policy gradient; the weights then take one Adam-like first step
θ − lr·sign(∇loss) for each ``--lrs`` value, and the GenEval-style partial-credit reward is measured on a fixed
set of ``--eval-prompts`` prompts × 2 samples with common random numbers (the same generator seed before and
after). Printed: the mean and per-batch change of the reward. A gradient that carries signal raises it at small
steps; one dominated by sampling noise or by a biased surrogate does not::

    uv run python tools/mask_step_check.py p1:3:all p2:3:all ar:3:all p2:3:0,1,2,3

This is the measurement behind the ``shapes`` preset's choice of p_θ2 (docs/results/mask_grpo_shapes.md).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    from shared.advantages import group_advantages
    from shared.rewards import build_reward
    from shared.shapes import generate_prompts

    from mask_grpo.backends.shapes import ShapesMaskedPolicy
    from mask_grpo.replay import replay_log_probs
    from mask_grpo.sampler import SamplerConfig, sample

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="+", help="KIND:CFG:STEPS, e.g. p2:3:all or p1:1:0,1,2,3")
    p.add_argument("--model", default=str(ROOT / "assets/shapes_masked_base"))
    p.add_argument("--tags", default="single_object,colors,counting")
    p.add_argument("--prompts", type=int, default=8, help="prompts per gradient batch")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=4, help="independent gradient batches per setting")
    p.add_argument("--lrs", default="1e-4,3e-4", help="sign-step sizes")
    p.add_argument("--steps", type=int, default=8, help="unmasking iterations")
    p.add_argument("--eval-prompts", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tags = args.tags.split(",")
    policy = ShapesMaskedPolicy.from_pretrained(args.model)
    module = policy.trainable().eval()
    reward = build_reward("shapes", partial_credit=True)
    pool = generate_prompts(1000, seed=0, tags=tags)
    held_out = generate_prompts(1000, seed=7, tags=tags)[: args.eval_prompts]

    def scfg(cfg: float) -> SamplerConfig:
        return SamplerConfig(steps=args.steps, temperature="amused", cfg_scale=cfg)

    @torch.no_grad()
    def score(cfg: float) -> float:
        gen, prompts = torch.Generator().manual_seed(999), [r["prompt"] for r in held_out]
        cond = policy.encode(prompts)
        uncond = policy.encode([""] * len(prompts)) if cfg != 1 else None
        vals = []
        for _ in range(2):
            traj = sample(policy, None, scfg(cfg), cond=cond, uncond=uncond, generator=gen, record=False)
            vals.append(reward(policy.decode(traj.tokens), prompts, held_out).float().mean().item())
        return statistics.fmean(vals)

    def gradient(seed: int, kind: str, cfg: float, steps: list[int]) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(pool), generator=gen)[: args.prompts]
        recs = [pool[int(i)] for i in idx for _ in range(args.group_size)]
        prompts = [r["prompt"] for r in recs]
        cond = policy.encode(prompts)
        uncond = policy.encode([""] * len(prompts)) if cfg != 1 else None
        traj = sample(policy, None, scfg(cfg), cond=cond, uncond=uncond, generator=gen)
        r = reward(policy.decode(traj.tokens), prompts, recs).float()
        adv = group_advantages(r, torch.arange(args.prompts).repeat_interleave(args.group_size), std="group")
        module.zero_grad()
        lp = replay_log_probs(policy, traj, cond, steps, kind, uncond=uncond, cfg_scale=cfg)
        (-(adv.advantages[:, None] * lp).mean()).backward()
        return [q.grad.clone() for q in module.parameters()]

    params = list(module.parameters())
    original = [q.detach().clone() for q in params]
    lrs = [float(x) for x in args.lrs.split(",")]
    for setting in args.settings:
        kind, cfg_text, steps_text = setting.split(":")
        cfg = float(cfg_text)
        steps = list(range(args.steps)) if steps_text == "all" else [int(s) for s in steps_text.split(",")]
        base = score(cfg)
        changes: dict[float, list[float]] = {lr: [] for lr in lrs}
        for b in range(args.batches):
            grads = gradient(400 + b, kind, cfg, steps)
            for lr in lrs:
                with torch.no_grad():
                    for q, o, g in zip(params, original, grads, strict=True):
                        q.copy_(o - lr * torch.sign(g))
                changes[lr].append(score(cfg) - base)
                with torch.no_grad():
                    for q, o in zip(params, original, strict=True):
                        q.copy_(o)
        text = "  ".join(f"lr {lr:g}: {statistics.fmean(v):+.4f} ({', '.join(f'{x:+.3f}' for x in v)})"
                         for lr, v in changes.items())
        print(f"{setting:<14} base {base:.4f}  {text}", flush=True)


if __name__ == "__main__":
    main()
