"""Train a planner on an offline dataset, then evaluate it in the env (readable top to bottom).

    episodes, info = load_data(cfg)                      # Minari id; ours are built offline when missing
    data = make_windows(cfg, episodes)                   # normalised windows, return labels
    model = TrajectoryDiffuser(cfg.model_spec(...))
    for step: batch → model.loss (½(L_diff + L_inv)) → Adam → EMA
    evaluate(cfg, model (EMA weights), data, info)       # vector envs, returns, normalised score, metrics

Batches are drawn with replacement by one seeded generator (also used for t, ε and the CFG dropout) whose state is
checkpointed, so a resumed run continues with identical losses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.training import (
    EMA,
    MeanTracker,
    MetricsLogger,
    latest_checkpoint,
    load_checkpoint,
    progress,
    save_checkpoint,
    save_config,
)

from wfdiffuser.config import WFConfig
from wfdiffuser.data import SequenceDataset, load_or_build, normalizer_from_state
from wfdiffuser.evaluate import PlannerPolicy, run_episodes
from wfdiffuser.metrics import frequency_shift, mean_and_stderr, normalized_score, ref_scores_for, smoothness
from wfdiffuser.models import TrajectoryDiffuser

__all__ = ["evaluate", "load_data", "load_run", "make_windows", "train"]


def load_data(cfg: WFConfig):
    """Episodes and DatasetInfo of ``cfg.data.dataset``; our offline sets are built when missing and data.build."""
    return load_or_build(cfg.data.dataset, build=cfg.data.build)


def make_windows(cfg: WFConfig, episodes) -> SequenceDataset:
    d = cfg.data
    return SequenceDataset(episodes, horizon=d.horizon, normalizer=d.normalizer, discount=d.discount,
                           termination_penalty=d.termination_penalty, return_label=d.return_label,
                           returns_scale=d.returns_scale)


def _device(cfg: WFConfig) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not cfg.run.cpu else "cpu")


def _batch(data: SequenceDataset, idx: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in data.batch(idx.numpy()).items()}


def train(cfg: WFConfig) -> dict[str, Any]:
    """Train (resuming if asked), save checkpoints, then evaluate when ``run.evaluate``; returns the summary."""
    run_dir = Path(cfg.run.dir)
    episodes, info = load_data(cfg)            # errors about the data come before anything is built
    data = make_windows(cfg, episodes)
    device = _device(cfg)
    torch.manual_seed(cfg.train.seed)
    model = TrajectoryDiffuser(cfg.model_spec(data.obs_dim, data.act_dim)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
    ema = EMA(params, cfg.train.ema_decay)
    gen = torch.Generator(device="cpu").manual_seed(cfg.train.seed)
    ckpt_dir = run_dir / "checkpoints"
    start = 0
    ckpt = latest_checkpoint(ckpt_dir) if cfg.run.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["generator"]["state"])
        start = state["step"]
        print(f"resuming {run_dir} from step {start}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.json")
    logger = MetricsLogger(run_dir, resume_step=start if ckpt is not None else None)
    meta = {"state_norm": data.state_normalizer.state_dict(), "action_norm": data.action_normalizer.state_dict(),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "env_id": info.env_id,
            "dataset": cfg.data.dataset, "dataset_stats": data.dataset_stats()}

    def save(step: int) -> None:
        save_checkpoint(ckpt_dir, step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "ema": ema.state_dict(), "generator": {"state": gen.get_state()},
                                         "meta": meta}, keep_last=cfg.run.keep_last)

    print(f"{cfg.model.kind}: {sum(p.numel() for p in params) / 1e6:.2f} M parameters, {len(data)} windows of "
          f"{cfg.data.horizon} steps from {len(episodes)} episodes of {cfg.data.dataset}")
    tracker = MeanTracker(minimum=(), maximum=())
    steps = range(start + 1, cfg.train.steps + 1)
    model.train()
    for step in (progress(steps, initial=start, total=cfg.train.steps, desc="train") if cfg.run.progress else steps):
        idx = torch.randint(0, len(data), (cfg.train.batch_size,), generator=gen)
        b = _batch(data, idx, device)
        out = model.loss(b["states"], b["actions"], b["returns"], b["mask"], p_drop=cfg.train.p_drop,
                         generator=gen)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if cfg.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        optimizer.step()
        ema.update()
        tracker.add({k: float(v.detach()) for k, v in out.items()})
        if step % cfg.run.log_every == 0 or step == cfg.train.steps:
            logger.log(tracker.result(), step)
            tracker = MeanTracker(minimum=(), maximum=())
        if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.train.steps:
            save(step)
    logger.close()
    summary: dict[str, Any] = {"steps": cfg.train.steps, "dataset": cfg.data.dataset, "kind": cfg.model.kind}
    if cfg.run.evaluate:
        with ema.average_parameters():
            summary.update(evaluate(cfg, model, data, info, device=device))
        (run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate(cfg: WFConfig, model: TrajectoryDiffuser, data: SequenceDataset, info, *,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Plan in ``cfg.eval.episodes`` seeded episodes; raw returns, normalised score, frequency shift, smoothness."""
    from wfdiffuser.evaluate import make_env

    env = make_env(info.env_id, cfg.eval.max_steps, **(info.env_kwargs or {}))
    low, high = env.action_space.low, env.action_space.high
    env.close()
    model.eval()
    p = cfg.plan
    policy = PlannerPolicy(model, data.state_normalizer, data.action_normalizer, low, high, guidance=p.guidance,
                           target=p.target, sampler=p.sampler, sample_steps=p.sample_steps,
                           temperature=p.temperature, batch_cfg=p.batch_cfg, batch_bands=p.batch_bands,
                           fixed_noise=p.fixed_noise, seed=cfg.eval.seed, device=device)
    res = run_episodes(policy, info.env_id, episodes=cfg.eval.episodes, n_envs=cfg.eval.n_envs, seed=cfg.eval.seed,
                       max_steps=cfg.eval.max_steps, env_kwargs=info.env_kwargs, progress=cfg.run.progress)
    out: dict[str, Any] = {"env_id": info.env_id, "episodes": cfg.eval.episodes, "returns": res.returns.tolist(),
                           "return_mean": float(res.returns.mean()), "return_std": float(res.returns.std()),
                           "dataset_return_mean": float(data.dataset_stats()["return_mean"])}
    refs = ref_scores_for(info.env_id, info.ref_min_score, info.ref_max_score)
    if refs is not None:
        scores = normalized_score(res.returns, *refs)
        out.update(score_mean=float(scores.mean()), score_stderr=mean_and_stderr(scores)[1],
                   ref_min_score=refs[0], ref_max_score=refs[1])
    acts = [a for a in res.actions if len(a) >= 3]
    if acts:
        out["action_smoothness"] = float(np.mean([smoothness(a[None]) for a in acts]))
    if policy.plans:
        plans = np.concatenate(policy.plans)
        windows = np.stack([data[i]["states"].numpy() for i in
                            np.random.default_rng(0).choice(len(data), min(len(data), 2048), replace=False)])
        out["frequency_shift"] = frequency_shift(plans, windows)
        out["plan_smoothness"] = smoothness(plans)
        out["data_smoothness"] = smoothness(windows)
    return out


def load_run(run_dir: str | Path, *, ema: bool = True, device: str = "cpu") -> tuple[WFConfig, TrajectoryDiffuser]:
    """(config, model) of a finished run: the latest checkpoint, with the EMA weights by default."""
    from shared.training import load_config

    run_dir = Path(run_dir)
    cfg = load_config(WFConfig, run_dir / "config.json")
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}; train first "
                                f"(`wfdiffuser train --set run.dir={run_dir}`)")
    state = load_checkpoint(ckpt, map_location=device)
    meta = state["meta"]
    model = TrajectoryDiffuser(cfg.model_spec(meta["obs_dim"], meta["act_dim"])).to(device)
    model.load_state_dict(state["model"])
    if ema:
        e = EMA([p for p in model.parameters() if p.requires_grad], cfg.train.ema_decay)
        e.load_state_dict(state["ema"])
        e.copy_to()
    model.eval()
    return cfg, model
