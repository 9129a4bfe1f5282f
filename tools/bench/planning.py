"""Benchmark: planning throughput of the public code's planner vs our fastest setting, same network, in one run.

One WFDiffuser trained with T = 200 diffusion steps on our Pendulum set (the ``pendulum`` preset with
``model.diffusion_steps=200``; trained here unless ``--run`` names such a run) plans in 10 vector envs stepped
together. Rows:

* ``public``   the public code's planner: 200 DDPM steps, the conditional and unconditional passes as two forwards
               and each band's U-Net on its own: 200 × 2 × 2 = 800 U-Net forwards per env step (card §3)
* ``ddim``     DDIM with ``--ddim-steps`` steps, CFG batched into one forward
* ``ddim+vmap`` the same with both band U-Nets in one vmapped forward

Throughput = actions per second across the envs (env steps × envs / wall time, planning and env stepping
included), measured on the first ``--timing-steps`` env steps of the evaluation episodes after one warm-up step,
the rows alternating ``--repeats`` times (medians). Return = full seeded episodes with that row's sampler; the
``public`` row's return is computed with its CFG batched (the same numbers: tests/test_models.py checks batched and
two-pass CFG agree), since 800 forwards per step make full CPU episodes slow. The ratio is throughput / public's
(goal ≥ 10×)::

    uv run python tools/bench/planning.py                      # trains the T = 200 model first (CPU, minutes)
    uv run python tools/bench/planning.py --run outputs/bench_planning/run --device cuda

Writes ``docs/results/bench_planning.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def _policy(cfg, model, data, low, high, device: str, **plan):
    from wfdiffuser.evaluate import PlannerPolicy

    kw = dict(guidance=cfg.plan.guidance, target=cfg.plan.target, temperature=cfg.plan.temperature)
    kw.update(plan)
    return PlannerPolicy(model, data.state_normalizer, data.action_normalizer, low, high, seed=cfg.eval.seed,
                         keep_plans_every=0, device=device, **kw)


def _time(policy, env_id: str, n_envs: int, steps: int, seed: int, env_kwargs: dict) -> float:
    """Actions per second over ``steps`` env steps of ``n_envs`` envs (after one warm-up step)."""
    from wfdiffuser.evaluate import make_env

    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id, 0, **env_kwargs) for _ in range(n_envs)])
    obs, _ = envs.reset(seed=list(range(seed, seed + n_envs)))
    obs, *_ = envs.step(policy(np.asarray(obs, np.float32)))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(steps):
        obs, *_ = envs.step(policy(np.asarray(obs, np.float32)))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    envs.close()
    return steps * n_envs / (time.perf_counter() - tic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="", help="a trained run with model.diffusion_steps=200 (empty: train one)")
    p.add_argument("--train-dir", default=str(ROOT / "outputs" / "bench_planning" / "run"))
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--n-envs", type=int, default=10)
    p.add_argument("--episodes", type=int, default=10, help="episodes for the returns")
    p.add_argument("--timing-steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)

    from shared.training import load_config

    from wfdiffuser.config import WFConfig
    from wfdiffuser.evaluate import make_env, run_episodes
    from wfdiffuser.metrics import normalized_score
    from wfdiffuser.train import load_data, load_run, make_windows, train

    run = Path(args.run) if args.run else Path(args.train_dir)
    if not args.run and not (run / "checkpoints").exists():
        train(load_config(WFConfig, None, [f"run.dir={run}", "model.diffusion_steps=200", "run.evaluate=false"],
                          preset="pendulum"))
    cfg, model = load_run(run, device=args.device)
    if cfg.model.diffusion_steps != 200:
        p.error(f"--run {run} was trained with model.diffusion_steps={cfg.model.diffusion_steps}; the public "
                "planner needs 200")
    episodes, info = load_data(cfg)
    data = make_windows(cfg, episodes)
    env = make_env(info.env_id, 0, **info.env_kwargs)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    rows = {
        "public": dict(sampler="ddpm", batch_cfg=False, batch_bands=False),
        "ddim": dict(sampler="ddim", sample_steps=args.ddim_steps, batch_cfg=True, batch_bands=False),
        "ddim+vmap": dict(sampler="ddim", sample_steps=args.ddim_steps, batch_cfg=True, batch_bands=True),
    }
    speed: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.repeats):
        for name, plan in rows.items():
            pol = _policy(cfg, model, data, low, high, args.device, **plan)
            speed[name].append(_time(pol, info.env_id, args.n_envs, args.timing_steps, cfg.eval.seed,
                                     info.env_kwargs))
            print(f"{name:<10} {speed[name][-1]:8.2f} actions/s", flush=True)
    results = {}
    for name, plan in rows.items():
        plan = {**plan, "batch_cfg": True} if name == "public" else plan
        res = run_episodes(_policy(cfg, model, data, low, high, args.device, **plan), info.env_id,
                           episodes=args.episodes, n_envs=args.n_envs, seed=cfg.eval.seed, env_kwargs=info.env_kwargs)
        score = normalized_score(res.returns, info.ref_min_score, info.ref_max_score)
        results[name] = {"plan": rows[name], "actions_per_s": statistics.median(speed[name]),
                         "actions_per_s_all": speed[name], "return_mean": float(res.returns.mean()),
                         "return_std": float(res.returns.std()), "score_mean": float(score.mean())}
        print(f"{name:<10} return {res.returns.mean():.1f} ± {res.returns.std():.1f}", flush=True)
    base = results["public"]["actions_per_s"]
    lines = ["| planner | U-Net forwards per env step | actions/s (10 envs) | × public | return (10 episodes) | "
             "normalised score |", "|---|---|---|---|---|---|"]
    fwd = {"public": 800, "ddim": 2 * args.ddim_steps, "ddim+vmap": args.ddim_steps}
    for name, r in results.items():
        r["speedup"] = r["actions_per_s"] / base
        lines.append(f"| {name} | {fwd[name]} | {r['actions_per_s']:.2f} | {r['speedup']:.1f} | "
                     f"{r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['score_mean']:.1f} |")
    table = "\n".join(lines)
    print(table)
    meta = {"device": args.device, "machine": platform.machine(), "torch": torch.__version__, "run": str(run),
            "ddim_steps": args.ddim_steps, "n_envs": args.n_envs, "timing_steps": args.timing_steps,
            "repeats": args.repeats, "threads": torch.get_num_threads()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_planning.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=2))
    (out / "bench_planning.md").write_text(
        "# Planning throughput: the public code's planner vs ours (same network)\n\n"
        f"`uv run python tools/bench/planning.py` on {args.device} ({platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)); WFDiffuser trained with T = 200 on our Pendulum set; medians of "
        f"{args.repeats} alternating timings over {args.timing_steps} env steps × {args.n_envs} envs.\n\n"
        + table + "\n\nvmap counts one forward for both bands. The public row's return is computed with batched CFG "
        "(numerically the same plans).\n")


if __name__ == "__main__":
    main()
