"""Re-evaluate finished runs (flow-GRPO: shared.flow_grpo, chunk_grpo, slas; and mask_grpo) on a larger fixed
shapes evaluation set.

The in-training evaluation uses ``run.eval_per_tag`` prompts per category (32 in the shapes presets), and runs made
before ``run.eval_seed`` existed used the training seed as evaluation seed, so two seeds' scores differed by
evaluation noise as well as by training. This script loads each run's
last checkpoint (its EMA weights when the run kept an EMA, else the trained weights), and scores the base and the
trained model on the same ``--per-tag`` prompts per category with the same ``--seed`` for every run: the gains of
different runs are then comparable, and the base is one number::

    uv run python tools/eval_runs.py outputs/run_s0 outputs/run_s1 outputs/run_s2 --per-tag 128
    uv run python tools/eval_runs.py RUN... --tags single_object,colors,counting --out docs/results/x.json

A mask_grpo run (its checkpoint config has a ``filter`` section) is sampled with its evaluation sampler
(``run.eval_steps``, ``run.eval_cfg_scale``), ``--samples`` images per prompt.

Prints a markdown table (per run and mean ± std over runs) and writes JSON when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch


def _config(state: dict):
    from shared.flow_grpo.config import RunConfig
    from shared.training import load_config

    names = {f.name for f in dataclasses.fields(RunConfig)}
    return load_config(RunConfig, {k: v for k, v in state["config"].items() if k in names})


def _evaluate_mask_run(state: dict, base: bool, *, per_tag: int, tags: list[str] | None, seed: int,
                       samples: int) -> tuple[dict | None, dict]:
    """(base metrics or None, trained metrics) of a mask_grpo checkpoint."""
    from shared.flow_grpo.train import build_reward_fn
    from shared.shapes import eval_prompts
    from shared.training import EMA, load_config

    from mask_grpo.backends import load_policy
    from mask_grpo.config import MaskGRPOConfig
    from mask_grpo.train import eval_micro_batch, evaluate, sampler_config

    cfg = load_config(MaskGRPOConfig, state["config"])
    policy = load_policy(cfg.model)
    records = eval_prompts(per_tag=per_tag, tags=tags or cfg.run.eval_tags or cfg.prompts.tags or None)
    kw = dict(seed=seed, samples=samples, micro_batch=eval_micro_batch(cfg), shapes=True, autocast=contextlib.nullcontext)
    reward, ecfg = build_reward_fn(cfg.reward), sampler_config(cfg, evaluation=True)
    before = evaluate(policy, records, reward, ecfg, **kw)[0] if base else None
    module = policy.trainable()
    module.load_state_dict(state["model"])
    if state.get("ema") is not None:
        ema = EMA([p for p in module.parameters() if p.requires_grad], cfg.train.ema_decay)
        ema.load_state_dict(state["ema"])
        ema.copy_to()
    return before, evaluate(policy, records, reward, ecfg, **kw)[0]


def evaluate_runs(runs: list[Path], *, per_tag: int, tags: list[str] | None, seed: int, samples: int = 2) -> dict:
    """{"base": metrics, "runs": {run: metrics}}; metrics = eval/geneval, eval/<tag>, eval/reward_mean."""
    from shared.flow_grpo.evaluation import evaluate
    from shared.flow_grpo.model import build_policy, sampler_config
    from shared.flow_grpo.train import build_reward_fn
    from shared.shapes import eval_prompts
    from shared.training import EMA, latest_checkpoint, load_checkpoint

    out: dict = {"runs": {}}
    for run in runs:
        ckpt = latest_checkpoint(run / "checkpoints")
        if ckpt is None:
            raise SystemExit(f"{run}: no checkpoint in {run / 'checkpoints'}; fix: pass a finished run folder")
        state = load_checkpoint(ckpt)
        if "filter" in state["config"]:  # a mask_grpo run
            before, after = _evaluate_mask_run(state, "base" not in out, per_tag=per_tag, tags=tags, seed=seed,
                                               samples=samples)
            out.setdefault("base", before)
            out["runs"][str(run)] = {**after, "checkpoint": ckpt.name, "ema": state.get("ema") is not None}
            print(f"{run}: {after['eval/geneval']:.3f}", file=sys.stderr, flush=True)
            continue
        cfg = _config(state)
        policy = build_policy(cfg, torch.device("cpu"))
        records = eval_prompts(per_tag=per_tag, tags=tags or cfg.run.eval_tags or cfg.prompts.tags or None)
        reward = build_reward_fn(cfg.reward)
        ode = sampler_config(cfg, policy, 64, ode=True)
        kw = dict(seed=seed, shapes=True, autocast=contextlib.nullcontext)
        if "base" not in out:
            out["base"] = evaluate(policy.adapter, records, reward, ode, **kw)  # adapters start as the identity
        policy.load_trainable_state(state["model"])
        if state.get("ema") is not None:
            ema = EMA(policy.params, cfg.train.ema_decay)
            ema.load_state_dict(state["ema"])
            ema.copy_to(policy.params)
        out["runs"][str(run)] = {**evaluate(policy.adapter, records, reward, ode, **kw),
                                 "checkpoint": ckpt.name, "ema": state.get("ema") is not None}
        print(f"{run}: {out['runs'][str(run)]['eval/geneval']:.3f}", file=sys.stderr, flush=True)
    return out


def table(result: dict) -> str:
    base = result["base"]
    tags = [k.removeprefix("eval/") for k in base if k.startswith("eval/") and k not in ("eval/geneval",
                                                                                          "eval/reward_mean")]
    head = "| run | score | gain | " + " | ".join(tags) + " |\n|---|---|---|" + "---|" * len(tags)
    rows = [f"| base | {base['eval/geneval']:.3f} | | " + " | ".join(f"{base['eval/' + t]:.3f}" for t in tags) + " |"]
    for run, m in result["runs"].items():
        rows.append(f"| {Path(run).name} | {m['eval/geneval']:.3f} | {m['eval/geneval'] - base['eval/geneval']:+.3f} | "
                    + " | ".join(f"{m['eval/' + t]:.3f}" for t in tags) + " |")
    if len(result["runs"]) > 1:
        def ms(key: str, minus: float = 0.0) -> str:
            v = [m[key] - minus for m in result["runs"].values()]
            return f"{statistics.fmean(v):+.3f} ± {statistics.stdev(v):.3f}" if minus else \
                f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}"
        rows.append(f"| mean ± std | {ms('eval/geneval')} | {ms('eval/geneval', base['eval/geneval'])} | "
                    + " | ".join(ms('eval/' + t) for t in tags) + " |")
    return head + "\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with checkpoints/)")
    p.add_argument("--per-tag", type=int, default=128, help="evaluation prompts per category (default: %(default)s)")
    p.add_argument("--tags", default="", help="comma-separated categories (default: the runs' evaluation tags)")
    p.add_argument("--seed", type=int, default=1234, help="evaluation noise seed, the same for every run")
    p.add_argument("--samples", type=int, default=2, help="mask_grpo runs: images per prompt (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = evaluate_runs(args.runs, per_tag=args.per_tag, tags=[t for t in args.tags.split(",") if t] or None,
                           seed=args.seed, samples=args.samples)
    result["args"] = {**vars(args), "runs": [str(r) for r in args.runs], "out": str(args.out)}
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
