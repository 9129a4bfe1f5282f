"""How much signal is in one GRPO update? Gradient cosine between independent rollout batches, and the reward
variance that the SDE transitions (not the initial noise) explain.

For a fixed model, draw ``--batches`` independent batches of P prompts × G images with the flow_grpo SDE, compute the
on-policy GCPO/GRPO gradient of each (chunks ``--chunks`` over the first transitions, batch-std advantages), and
print the pairwise cosines: near 0 means one update's gradient is mostly sampling noise, so Adam moves the weights
in a random direction of size ≈ lr per step. Then, with one initial noise shared by G continuations, the share of
the reward variance that lies within a shared-noise group (what the trained transitions can be credited for)::

    uv run python tools/grad_snr.py                                  # shapes base, shapes reward, 4 × 32 samples
    uv run python tools/grad_snr.py --prompts 16 --group-size 16     # does a larger batch align the gradients?
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from shared.advantages import group_advantages
from shared.flow_grpo.objective import slot_loss
from shared.flow_grpo.train import unit_weights
from shared.flow_grpo.units import slots
from shared.rewards import build_reward
from shared.rollout import SamplerConfig, adapter_for, sample
from shared.rollout.loading import load_pipeline
from shared.shapes import generate_prompts


def batch_gradient(adapter, params, pool, reward, cfg, units, *, seed: int, prompts: int, group_size: int):
    """The flattened gradient of the on-policy clipped surrogate of one fresh batch."""
    g = torch.Generator().manual_seed(seed)
    recs = [pool[int(i)] for i in torch.randperm(len(pool), generator=g)[:prompts]]
    with torch.no_grad():
        traj = sample(adapter, [r["prompt"] for r in recs], cfg, group_size=group_size, generator=g, metadata=recs)
    rewards = reward(traj.images, traj.prompts, traj.metadata)
    adv = group_advantages(rewards, traj.group_ids, std="batch").advantages
    per_sample = [units] * traj.batch_size
    weights = unit_weights(per_sample, traj.batch_size)
    for p in params:
        p.grad = None
    for slot in slots(per_sample):
        slot_loss(adapter, traj, slot, adv, weights, cfg, clip_low=1e-4).loss.backward()
    return torch.cat([p.grad.flatten() for p in params])


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
                            group_size=args.group_size) for s in range(args.batches)]
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
