"""Mask-GRPO, top to bottom: prompts → grouped unmasking rollouts → rewards (+ filter) → advantages → loss → step.

    mask-grpo train                                        # the shapes preset on CPU, minutes
    accelerate launch -m mask_grpo train --preset showo-512 --set model.path=... --set model.vq_path=... ...

Each iteration k (mask_grpo.md §5, §6):

1. this process takes its P/W prompts (whole groups of G) and samples them with the recording unmasking sampler
   (`sample.steps` iterations: the unmasking reduction when fewer than `run.eval_steps`);
2. rewards; groups whose reward std falls below the filter's percentile of past groups are redrawn
   (`filtering.VanishingSampleFilter`); group advantages A_j = (r_j − mean)/(std + eps) over all processes;
3. `train.updates_per_rollout` passes over the rollout, each split into `train.steps_per_rollout` optimiser steps:
   per micro-batch, the recorded transitions of the trained iterations (`cfg.trained_steps()`: all, or the
   computational reduction's first / last few) are replayed under the current weights (`replay.replay_log_probs`,
   `train.steps_per_forward` iterations per forward), and the per-sample, per-iteration PPO loss
   max(−A·ρ_t, −A·clip(ρ_t, 1 − ε_l, 1 + ε_h)), ρ_t = π_θ/π_old of the `train.logprob` kind, is averaged over samples
   and iterations (+ β·KL to a frozen copy of the initial model, k3 by default, only when β > 0). The first pass
   is on-policy (ρ ≡ 1 up to float rounding, the authors' only case); later passes are where the clip acts;
4. evaluation (fixed prompts and `run.eval_seed`, `run.eval_steps`, `run.eval_cfg_scale`), logging, checkpoints.

All randomness of iteration k comes from generators seeded by (seed, k, rank, purpose) and a checkpoint holds the
weights, optimiser, EMA, filter history, fault counters and RNG state, so a resumed run logs what the uninterrupted
run would have (bit-exact on CPU). Outputs in `run.dir`: metrics.jsonl, checkpoints/, samples_before.png,
samples_after.png, reward_curve.png.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path

import torch

from shared.advantages import distributed_group_advantages
from shared.flow_grpo.evaluation import eval_records, save_curves
from shared.flow_grpo.prompts import load_prompt_pool, local_batch, mix_seed
from shared.flow_grpo.train import build_reward_fn
from shared.losses import clipped_surrogate, kl_estimator
from shared.training import (
    EMA,
    FaultGuard,
    MeanTracker,
    MetricsLogger,
    any_process,
    average_gradients,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    progress,
    restore_rng_state,
    save_checkpoint,
    save_image_grid,
    setup_accelerator,
    to_dict,
)

from mask_grpo.config import MaskGRPOConfig
from mask_grpo.filtering import VanishingSampleFilter
from mask_grpo.policy import Cond, MaskedPolicy, index_cond
from mask_grpo.replay import replay_log_probs
from mask_grpo.sampler import SamplerConfig, Trajectory, sample

__all__ = ["Rollout", "eval_micro_batch", "evaluate", "lr_lambda", "rollout", "sampler_config", "train"]


def sampler_config(cfg: MaskGRPOConfig, *, evaluation: bool = False) -> SamplerConfig:
    """The rollout sampler, or the evaluation one (`run.eval_steps`, `run.eval_cfg_scale` when set)."""
    s, r = cfg.sample, cfg.run
    steps = (r.eval_steps or s.steps) if evaluation else s.steps
    w = (r.eval_cfg_scale or s.cfg_scale) if evaluation else s.cfg_scale
    return SamplerConfig(steps=steps, schedule=s.schedule, exponent=s.exponent, temperature=s.temperature,
                         tau0=s.tau0, amused_range=tuple(s.amused_range), cfg_scale=w)


class Rollout:
    """B samples of one process: their trajectory, conditioning, prompts/records, images and rewards."""

    def __init__(self, traj: Trajectory, cond: Cond, uncond: Cond | None, records: list[dict], images: torch.Tensor):
        self.traj, self.cond, self.uncond, self.records, self.images = traj, cond, uncond, records, images

    def replace_rows(self, rows: list[int], other: Rollout) -> None:
        """Put `other`'s samples (same prompts) in place of rows `rows` (a redrawn group)."""
        idx = torch.tensor(rows)
        for name in ("tokens", "commit_step", "samples", "kappa"):
            getattr(self.traj, name)[idx] = getattr(other.traj, name)
        for k in self.traj.log_probs:
            self.traj.log_probs[k][idx] = other.traj.log_probs[k]
        self.images[idx] = other.images


@torch.no_grad()
def rollout(policy: MaskedPolicy, records: list[dict], scfg: SamplerConfig, generator: torch.Generator,
            micro_batch: int, autocast=contextlib.nullcontext) -> Rollout:
    """Sample one image per record (records already repeated G times), in micro-batches, and decode them."""
    prompts = [r["prompt"] for r in records]
    cond = policy.encode(prompts)
    uncond = policy.encode([""] * len(prompts)) if scfg.cfg_scale != 1.0 else None
    trajs, images = [], []
    for lo in range(0, len(prompts), micro_batch):
        rows = list(range(lo, min(lo + micro_batch, len(prompts))))
        with autocast():
            tr = sample(policy, None, scfg, generator=generator, cond=index_cond(cond, rows),
                        uncond=None if uncond is None else index_cond(uncond, rows))
            images.append(policy.decode(tr.tokens).float().cpu())
        trajs.append(tr)
    return Rollout(Trajectory.cat(trajs), cond, uncond, records, torch.cat(images))


def _rewards(reward, ro: Rollout, guard: FaultGuard) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (B,) with non-finite values replaced by 0 (their advantage is zeroed later) and the keep mask."""
    raw = torch.as_tensor(reward(ro.images, [r["prompt"] for r in ro.records], ro.records)).float().reshape(-1)
    keep = guard.check_rewards(raw).keep
    return torch.where(keep, raw, torch.zeros_like(raw)), keep


def _group_stds(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    return rewards.view(-1, group_size).std(dim=1, unbiased=False)


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases and norms (1-D tensors), as the authors' optimiser."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_lambda(cfg: MaskGRPOConfig):
    """Multiplier of train.lr at optimiser step s: linear warm-up over `warmup_steps`, then constant or cosine to 0
    at the last step (train.iterations × updates_per_rollout × steps_per_rollout)."""
    t = cfg.train
    total = t.iterations * t.updates_per_rollout * t.steps_per_rollout

    def fn(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.lr_schedule == "constant":
            return 1.0
        span = max(1, total - t.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - t.warmup_steps) / span)))

    return fn


def _frozen_copy(policy: MaskedPolicy) -> MaskedPolicy:
    """π_ref: a deep copy of the policy with gradients off (built only when β > 0; card §5 "ours")."""
    ref = copy.deepcopy(policy)
    for p in ref.trainable().parameters():
        p.requires_grad_(False)
    return ref


def _chunks(steps: list[int], size: int) -> list[list[int]]:
    size = size or len(steps)
    return [steps[i:i + size] for i in range(0, len(steps), size)]


def _update(cfg: MaskGRPOConfig, policy: MaskedPolicy, reference: MaskedPolicy | None, ro: Rollout,
            adv: torch.Tensor, part: range, mb: int, accelerator, stats: MeanTracker) -> None:
    """Accumulate the gradient of mean_{i ∈ part} mean_{t ∈ trained} (ℓ_it + β·KL_it) over micro-batches."""
    t, trained = cfg.train, cfg.trained_steps()
    for lo in range(part.start, part.stop, mb):
        rows = list(range(lo, min(lo + mb, part.stop)))
        sub, cond = ro.traj.index(rows), index_cond(ro.cond, rows)
        uncond = None if ro.uncond is None else index_cond(ro.uncond, rows)
        for chunk in _chunks(trained, t.steps_per_forward):
            weight = len(rows) / len(part) * len(chunk) / len(trained)
            with accelerator.autocast():
                lp = replay_log_probs(policy, sub, cond, chunk, t.logprob, uncond=uncond,
                                      cfg_scale=cfg.sample.cfg_scale)
            old = sub.log_probs[t.logprob][:, chunk]
            out = clipped_surrogate(lp, old, adv[rows], clip_low=t.clip_low, clip_high=t.clip_high,
                                    aggregation="token_mean")
            loss, metrics = out.loss, dict(out.metrics)
            if reference is not None:
                with torch.no_grad(), accelerator.autocast():
                    ref = replay_log_probs(reference, sub, cond, chunk, t.logprob, uncond=uncond,
                                           cfg_scale=cfg.sample.cfg_scale)
                kl = kl_estimator(lp, ref, t.kl_kind).mean()
                loss = loss + t.kl_beta * kl
                metrics["kl"] = kl.item()
            metrics["loss"] = loss.item()
            accelerator.backward(loss * weight)
            stats.add(metrics)


@torch.no_grad()
def evaluate(policy: MaskedPolicy, records: list[dict], reward, ecfg: SamplerConfig, *, seed: int, samples: int,
              micro_batch: int, shapes: bool, autocast) -> tuple[dict, torch.Tensor]:
    """Fixed prompts (each `samples` times) from a fixed seed: eval/reward_mean and, on the shapes world,
    eval/geneval and eval/<tag>. Returns the metrics and the images of the first sample of each prompt."""
    reps = [r for r in records for _ in range(samples)]
    ro = rollout(policy, reps, ecfg, torch.Generator().manual_seed(mix_seed(seed, 0xE7A1)), micro_batch, autocast)
    out = {"eval/reward_mean": torch.as_tensor(reward(ro.images, [r["prompt"] for r in reps], reps)).float()
           .mean().item()}
    if shapes:
        from shared.shapes import geneval_score

        summary = geneval_score(ro.images, reps)
        out["eval/geneval"] = summary["overall"]
        out.update({f"eval/{tag}": v for tag, v in summary["per_tag"].items()})
    return out, ro.images[::samples]


def eval_micro_batch(cfg: MaskGRPOConfig) -> int:
    """Samples per evaluation forward: `sample.micro_batch_size`, else 64. Fixed by the config alone (not by the
    rollout layout), since the micro-batching decides the order of the random draws and so the evaluation images."""
    return cfg.sample.micro_batch_size or 64


def train(cfg: MaskGRPOConfig, *, policy: MaskedPolicy | None = None, reward=None) -> dict:
    """Run (or resume) the training described by `cfg`; return the last metrics record. `policy`: an already
    built `MaskedPolicy` to train instead of loading `cfg.model`; `reward`: a `shared.rewards.Reward` callable
    (images, prompts, records) → (B,) to use instead of `cfg.reward`."""
    run_dir, t = Path(cfg.run.dir), cfg.train
    ckpt = latest_checkpoint(run_dir / "checkpoints") if cfg.run.resume else None
    state = load_checkpoint(ckpt) if ckpt else None  # verified before any model is built
    pool = load_prompt_pool(cfg.prompts, t.seed)
    accelerator = setup_accelerator(mixed_precision=cfg.model.mixed_precision if torch.cuda.is_available() else "no",
                                    seed=t.seed, cpu=cfg.model.cpu)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if cfg.prompts.per_iteration % world:
        raise ValueError(f"prompts.per_iteration={cfg.prompts.per_iteration} is not divisible by the {world} "
                         "processes (whole groups per process). Fix: change prompts.per_iteration.")
    G = cfg.sample.group_size
    n_local = cfg.prompts.per_iteration // world * G
    if n_local % t.steps_per_rollout:
        raise ValueError(f"train.steps_per_rollout={t.steps_per_rollout} does not divide the {n_local} samples per "
                         "process. Fix: change it, prompts.per_iteration or sample.group_size.")
    mb = cfg.sample.micro_batch_size or n_local // t.steps_per_rollout
    if policy is None:
        from mask_grpo.backends import load_policy

        policy = load_policy(cfg.model, accelerator.device)
    module = policy.trainable()
    module.eval()  # no dropout: the first pass is exactly on-policy
    reference = _frozen_copy(policy) if t.kl_beta > 0 else None
    params = [p for p in module.parameters() if p.requires_grad]
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(module, t.weight_decay), lr=t.lr, betas=tuple(t.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    ema = EMA(params, t.ema_decay) if t.ema_decay > 0 else None
    averaged = (lambda: ema.average_parameters()) if ema else contextlib.nullcontext
    reward = reward if reward is not None else build_reward_fn(cfg.reward)
    filt = (VanishingSampleFilter(cfg.filter.percentile, min_history=cfg.filter.min_history,
                                  history=cfg.filter.history, max_tries=cfg.filter.max_tries)
            if cfg.filter.enabled else None)
    scfg, ecfg = sampler_config(cfg), sampler_config(cfg, evaluation=True)
    records = eval_records(cfg, pool)
    grid_records = records[:: max(1, len(records) // 12)][:12]
    eval_kw = dict(seed=cfg.run.eval_seed, samples=cfg.run.eval_samples, micro_batch=eval_micro_batch(cfg),
                   shapes=cfg.prompts.source == "shapes", autocast=accelerator.autocast)
    it_box = [0]

    def save(iteration: int) -> None:
        if main:
            save_checkpoint(run_dir / "checkpoints", iteration, {
                "model": module.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema else None, "filter": filt.state_dict() if filt else None,
                "faults": guard.state_dict(), "rng": capture_rng_state(), "trainer": {"iteration": iteration},
                "config": to_dict(cfg)}, keep_last=cfg.run.keep_last)
        accelerator.wait_for_everyone()

    def grid(name: str) -> None:
        _, images = evaluate(policy, grid_records, reward, ecfg, **{**eval_kw, "samples": 1, "shapes": False})
        captions = [r["prompt"].removeprefix("a photo of ") for r in grid_records]
        save_image_grid(images, run_dir / f"{name}.png", captions=captions, scale=max(1, 96 // images.shape[-1]),
                        nrow=6)

    guard = FaultGuard(t.max_consecutive_faults, on_abort=lambda: save(it_box[0]))
    start = 0
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        if filt is not None and state["filter"] is not None:
            filt.load_state_dict(state["filter"])
        guard.load_state_dict(state["faults"])
        start = int(state["trainer"]["iteration"])
        restore_rng_state(state["rng"])
    logger = MetricsLogger(run_dir, resume_step=start if state else None, enabled=main)
    if start == 0 and main:
        if cfg.run.grids:
            grid("samples_before")
        if cfg.run.eval_every:
            logger.log(evaluate(policy, records, reward, ecfg, **eval_kw)[0], 0)

    last: dict = {}
    bar = progress(range(start + 1, t.iterations + 1), initial=start, desc="mask-grpo",
                   disable=not (main and cfg.run.progress))
    for it in bar:
        it_box[0] = it
        tic = time.perf_counter()
        # 1. this process's groups, sampled with the recording sampler
        batch = local_batch(pool, iteration=it, seed=t.seed, per_iteration=cfg.prompts.per_iteration,
                            group_size=G, spread=False, world_size=world, rank=rank)
        reps = [r for r in batch.records for _ in range(G)]
        gen = torch.Generator().manual_seed(mix_seed(t.seed, it, rank, 1))
        ro = rollout(policy, reps, scfg, gen, mb, accelerator.autocast)
        # 2. rewards, the vanishing-sample filter, advantages over all processes
        rewards, keep = _rewards(reward, ro, guard)
        first_stds = _group_stds(rewards, G)
        resampled = 0
        if filt is not None:
            for g, std in enumerate(first_stds.tolist()):
                tries = 0
                while filt.should_resample(std, tries):
                    tries += 1
                    rows = list(range(g * G, (g + 1) * G))
                    regen = torch.Generator().manual_seed(mix_seed(t.seed, it, rank, 3, g, tries))
                    again = rollout(policy, [reps[i] for i in rows], scfg, regen, mb, accelerator.autocast)
                    r_again, k_again = _rewards(reward, again, guard)
                    ro.replace_rows(rows, again)
                    rewards[rows], keep[rows] = r_again, k_again
                    std = float(r_again.std(unbiased=False))
                resampled += tries > 0
            all_stds = accelerator.gather(first_stds.to(accelerator.device)).cpu()
            filt.observe(all_stds.tolist())
        adv_out = distributed_group_advantages(rewards.to(accelerator.device), batch.group_ids.to(accelerator.device),
                                               std=t.adv_std, eps=t.adv_eps, clip=t.adv_clip or None)
        adv = torch.where(keep, adv_out.advantages.float().cpu(), torch.zeros(keep.shape))
        all_r = accelerator.gather(rewards.to(accelerator.device)).cpu()
        metrics = {"reward_mean": all_r.mean().item(), "reward_std": all_r.std(unbiased=False).item(),
                   "zero_std_ratio": adv_out.zero_std_fraction, "mean_group_std": adv_out.mean_group_std,
                   "filter/resampled_groups": float(resampled), "time_rollout_s": time.perf_counter() - tic}
        if filt is not None and filt.threshold() is not None:
            metrics["filter/threshold"] = filt.threshold()
        # 3. clipped loss on the replayed transitions; one optimiser step per part
        stats, n_steps = MeanTracker(), 0
        part_size = n_local // t.steps_per_rollout
        for _ in range(t.updates_per_rollout if any_process(bool(keep.any()), accelerator.device) else 0):
            for lo in range(0, n_local, part_size):
                _update(cfg, policy, reference, ro, adv, range(lo, lo + part_size), mb, accelerator, stats)
                average_gradients(params)
                if guard.step(optimizer, named, max_grad_norm=t.max_grad_norm or math.inf,
                              clip_grad_norm=accelerator.clip_grad_norm_, scheduler=scheduler):
                    stats.add({"grad_norm": guard.last_grad_norm})
                    n_steps += 1
                    if ema is not None:
                        ema.update()
        metrics.update({k: v for k, v in guard.metrics().items() if k != "grad_norm"}, **stats.result(),
                       optimizer_steps=n_steps, lr=scheduler.get_last_lr()[0], time_iteration_s=time.perf_counter() - tic)
        # 4. evaluation, logging, checkpoints
        if main and cfg.run.eval_every and (it % cfg.run.eval_every == 0 or it == t.iterations):
            with averaged():
                metrics.update(evaluate(policy, records, reward, ecfg, **eval_kw)[0])
        last = logger.log(metrics, it)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}")
        if (cfg.run.save_every and it % cfg.run.save_every == 0) or it == t.iterations:
            save(it)

    if main and cfg.run.grids:
        with averaged():
            grid("samples_after")
        save_curves(run_dir)
    logger.close()
    return last
