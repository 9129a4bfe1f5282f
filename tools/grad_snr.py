"""How much signal is in one GRPO update? Gradient cosine between independent rollout batches, and the reward
variance that the SDE transitions (not the initial noise) explain.

For a fixed model, draw ``--batches`` independent batches of P prompts × G images with the flow_grpo SDE, compute the
on-policy GCPO/GRPO gradient of each (chunks ``--chunks`` over the first transitions, batch-std advantages), and
print the pairwise cosines: near 0 means one update's gradient is mostly sampling noise, so Adam moves the weights
in a random direction of size ≈ lr per step. Then, with one initial noise shared by G continuations, the share of
the reward variance that lies within a shared-noise group (what the trained transitions can be credited for)::

    uv run python tools/grad_snr.py                                  # shapes base, shapes reward, 4 × 32 samples
    uv run python tools/grad_snr.py --prompts 16 --group-size 16     # does a larger batch align the gradients?

``--step-lrs`` adds a finite-difference check (as tools/mask_step_check.py does for the masked base): each batch's
gradient, and the sum of all batches' (one larger batch), takes one Adam-like first step θ − lr·sign(∇loss) on the
selected weights, and the change of the GenEval-style score and partial-credit reward of the ODE evaluation sampler
(20 steps, the same noise before and after) is printed. A gradient that carries signal raises them at small steps::

    uv run python tools/grad_snr.py --batches 8 --step-lrs 3e-4,1e-3 --chunks 2,2 --sde-steps 0,1,2,3 --same-noise \
        --prompts 8 --skip-variance
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics

import torch

from shared.advantages import group_advantages
from shared.flow_grpo.objective import slot_loss
from shared.flow_grpo.train import unit_weights
from shared.flow_grpo.units import slots
from shared.rewards import build_reward
from shared.rollout import SamplerConfig, adapter_for, sample
from shared.rollout.loading import load_pipeline
from shared.shapes import generate_prompts


def batch_gradient(adapter, params, pool, reward, cfg, units, *, seed: int, prompts: int, group_size: int,
                   adv_std: str = "batch"):
    """The flattened gradient of the on-policy clipped surrogate of one fresh batch."""
    g = torch.Generator().manual_seed(seed)
    recs = [pool[int(i)] for i in torch.randperm(len(pool), generator=g)[:prompts]]
    with torch.no_grad():
        traj = sample(adapter, [r["prompt"] for r in recs], cfg, group_size=group_size, generator=g, metadata=recs)
    rewards = reward(traj.images, traj.prompts, traj.metadata)
    adv = group_advantages(rewards, traj.group_ids, std=adv_std).advantages
    per_sample = [units] * traj.batch_size
    weights = unit_weights(per_sample, traj.batch_size)
    for p in params:
        p.grad = None
    for slot in slots(per_sample):
        slot_loss(adapter, traj, slot, adv, weights, cfg, clip_low=1e-4).loss.backward()
    return torch.cat([p.grad.flatten() for p in params])


def step_check(adapter, params, grads, cfg, reward, lrs: list[float], *, tags: list[str], per_tag: int,
               pooled_only: bool = False) -> None:
    """Print the change of the ODE evaluation's score and reward after one sign step along each batch's gradient."""
    from shared.flow_grpo.evaluation import evaluate
    from shared.shapes import eval_prompts

    records = eval_prompts(per_tag=per_tag, tags=tags)
    ode = dataclasses.replace(cfg, num_steps=20, noise_level=0.0, sde_steps=None, same_noise_per_group=False)

    def score() -> tuple[float, float]:
        with torch.no_grad():
            m = evaluate(adapter, records, reward, ode, seed=1234, shapes=True, autocast=contextlib.nullcontext)
        return m["eval/geneval"], m["eval/reward_mean"]

    base = score()
    original = [q.detach().clone() for q in params]
    sizes = [q.numel() for q in params]

    def change_after_step(grad: torch.Tensor, lr: float) -> tuple[float, float]:
        with torch.no_grad():
            for q, o, gq in zip(params, original, grad.split(sizes), strict=True):
                q.copy_(o - lr * torch.sign(gq.view_as(o)))
        s, r = score()
        with torch.no_grad():
            for q, o in zip(params, original, strict=True):
                q.copy_(o)
        return s - base[0], r - base[1]

    print(f"step check on {len(records)} prompts: base score {base[0]:.4f}, reward {base[1]:.4f}")
    for lr in lrs:
        if not pooled_only:
            ds, dr = zip(*(change_after_step(g, lr) for g in grads))
            print(f"  lr {lr:g}: score {statistics.fmean(ds):+.4f} ({', '.join(f'{x:+.3f}' for x in ds)}), "
                  f"reward {statistics.fmean(dr):+.4f} ({', '.join(f'{x:+.3f}' for x in dr)})", flush=True)
        if len(grads) > 1:  # the same step along the gradient of all batches together (a larger batch)
            s, r = change_after_step(sum(grads), lr)
            print(f"  lr {lr:g}, the {len(grads)} batches pooled: score {s:+.4f}, reward {r:+.4f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/shapes_base")
    p.add_argument("--reward", default="shapes", help="shapes (partial credit) or any registered reward name")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--num-steps", type=int, default=8)
    p.add_argument("--chunks", default="2,2,3", help="chunk sizes over the first transitions")
    p.add_argument("--noise-level", type=float, default=0.7)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--sde-steps", default="", help="stochastic transitions (e.g. 0,1); empty = all (ODE elsewhere)")
    p.add_argument("--same-noise", action="store_true", help="one initial noise per group (DanceGRPO option)")
    p.add_argument("--per-tensor", action="store_true", help="print the cosine of every weight tensor")
    p.add_argument("--params", default="", help="comma-separated name parts: only these weights (empty = all)")
    p.add_argument("--tags", default="single_object,colors,counting")
    p.add_argument("--adv-std", default="batch", help="advantage normalisation: batch (Flow-GRPO) or group")
    p.add_argument("--step-lrs", default="", help="comma-separated sign-step sizes for the finite-difference check")
    p.add_argument("--eval-per-tag", type=int, default=64, help="step check: evaluation prompts per category")
    p.add_argument("--pooled-only", action="store_true", help="step check: only the step along all batches pooled")
    p.add_argument("--skip-variance", action="store_true", help="skip the within-group reward variance measurement")
    args = p.parse_args(argv)
    pipe = load_pipeline(args.model, torch_dtype=torch.float32)
    adapter = adapter_for(pipe)
    keep = [k for k in args.params.split(",") if k]
    named = [(n, q) for n, q in pipe.transformer.named_parameters() if not keep or any(k in n for k in keep)]
    params = [q for _, q in named]
    for n, q in pipe.transformer.named_parameters():
        q.requires_grad_(any(q is x for x in params))
    reward = build_reward(args.reward, **({"partial_credit": True} if args.reward == "shapes" else {}))
    pool = generate_prompts(400, seed=0, tags=args.tags.split(","))
    sizes = [int(s) for s in args.chunks.split(",")]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    units = [list(range(s, s + n)) for s, n in zip(starts, sizes, strict=True)]
    cfg = SamplerConfig(num_steps=args.num_steps, kind="flow_grpo", noise_level=args.noise_level,
                        guidance_scale=args.guidance, height=32, width=32,
                        sde_steps=tuple(int(x) for x in args.sde_steps.split(",")) if args.sde_steps else None,
                        same_noise_per_group=args.same_noise)
    grads = [batch_gradient(adapter, params, pool, reward, cfg, units, seed=s, prompts=args.prompts,
                            group_size=args.group_size, adv_std=args.adv_std) for s in range(args.batches)]
    cos = [torch.nn.functional.cosine_similarity(grads[i], grads[j], dim=0).item()
           for i in range(len(grads)) for j in range(i + 1, len(grads))]
    n = args.prompts * args.group_size
    print(f"gradient cosine between independent {n}-sample batches: mean {sum(cos) / len(cos):+.3f}, "
          f"range [{min(cos):+.3f}, {max(cos):+.3f}] ({len(cos)} pairs, {sum(q.numel() for q in params):,} weights)")
    if args.per_tensor:
        names = [n for n, _ in named]
        sizes_ = [q.numel() for q in params]
        parts = [g.split(sizes_) for g in grads]
        rows = []
        for k, name in enumerate(names):
            c = [torch.nn.functional.cosine_similarity(parts[i][k], parts[j][k], dim=0).item()
                 for i in range(len(grads)) for j in range(i + 1, len(grads))]
            rows.append((sum(c) / len(c), name, sizes_[k], sum(p_[k].norm().item() for p_ in parts) / len(parts)))
        for c, name, n_, nrm in sorted(rows, reverse=True):
            print(f"  {c:+.3f}  {nrm:9.3e}  {n_:8d}  {name}")
    if args.step_lrs:
        step_check(adapter, params, grads, cfg, reward, [float(x) for x in args.step_lrs.split(",")],
                   tags=args.tags.split(","), per_tag=args.eval_per_tag, pooled_only=args.pooled_only)
    if args.skip_variance:
        return
    shared_cfg = dataclasses.replace(cfg, same_noise_per_group=True)
    within, total = [], []
    for r in pool[:8]:
        traj = sample(adapter, [r["prompt"]] * 4, shared_cfg, group_size=4, generator=torch.Generator().manual_seed(1),
                      metadata=[r] * 4)
        rew = reward(traj.images, traj.prompts, traj.metadata).view(4, 4)  # 4 initial noises × 4 continuations
        within.append(rew.var(dim=1, unbiased=False).mean().item())
        total.append(rew.var(unbiased=False).item())
    w, t = sum(within) / len(within), sum(total) / len(total)
    print(f"reward variance: total {t:.4f}, within a shared initial noise {w:.4f} → the transitions explain "
          f"{w / max(t, 1e-12):.0%}")


if __name__ == "__main__":
    main()
