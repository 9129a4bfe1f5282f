"""Flow-matching GRPO, top to bottom: prompts → grouped rollouts → rewards → advantages → units → loss → step.

    python -m shared.flow_grpo --preset shapes                       # CPU, ≈ 15 min on 1 core
    accelerate launch --num_processes 8 -m shared.flow_grpo --preset flow_grpo --set model.path=... ...

Each iteration k:

1. every process takes its share of the P·G samples (:mod:`.prompts`) and draws them with the SDE sampler
   (per-step log-probs recorded);
2. rewards, and group advantages over all processes (``train.adv_*``, or the :class:`AdvantageFn` passed as
   ``train(cfg, advantages=...)``, e.g. slas's shaped advantages);
3. the unit selector (a built-in named by ``train.units``, or the object passed as ``train(cfg, selector=...)``)
   gets this process's rollout and returns per-sample units, validated by :func:`.units.check_units`; layouts
   may differ between samples (n_i units of any sizes). The rollout is split into ``train.steps_per_rollout``
   parts; per micro-batch, each unit slot j (unit j of every sample that has one) is re-scored, in one
   transformer forward with ``train.batched_units`` (GCPO's batched chunk forward) or one per step position,
   and its loss Σ_i w_i·(ℓ_ij + β·KL_ij), w_i = 1/(n_i·B_part), is backpropagated (:mod:`.objective`). The
   accumulated gradient is that of mean_i mean_{j<n_i} (ℓ_ij + β·KL_ij), one optimiser step per part. With β = 0
   the rows whose advantage is exactly 0 (groups of equal rewards) add nothing and are left out
   (``train.skip_zero_advantage``). The first part's ratios are exactly 1 for one-step units (same micro-batches,
   dtype and CFG batching as sampling; to float rounding when rows were left out); later parts and inner epochs
   are off-policy, where clipping acts;
4. evaluation (plain ODE, and hybrid with ``run.eval_hybrid_steps``), logging, checkpoints.

The reference π_ref (LoRA disabled, or a frozen copy of the initial transformer) is built only when the KL
(β > 0) or hybrid evaluation needs it, once, before any checkpoint is loaded.

All randomness of iteration k (prompts, noise, unit choice) comes from generators seeded by (seed, k, rank), and a
checkpoint holds the trained weights, optimiser, EMA, fault counters and RNG state, so a killed run resumed from its
last checkpoint logs the same metrics as an uninterrupted one (bit-exact on CPU). Outputs in ``run.dir``:
``metrics.jsonl``, ``checkpoints/``, ``samples_before.png``, ``samples_after.png`` (and
``samples_after_hybrid.png``), ``reward_curve.png``. ``cfg`` may be any subclass of RunConfig (a package adding
config sections); checkpoints store ``to_dict(cfg)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from shared.advantages import AdvantageOutput, distributed_group_advantages, gather_rewards
from shared.errors import ConfigError
from shared.flow_grpo.config import RunConfig
from shared.flow_grpo.evaluation import Hybrid, eval_records, evaluate, save_curves, save_grid
from shared.flow_grpo.model import Policy, build_policy, sampler_config
from shared.flow_grpo.objective import Reference, slot_loss
from shared.flow_grpo.prompts import load_prompt_pool, local_batch, mix_seed
from shared.flow_grpo.units import UnitSelector, Units, build_selector, check_units, slots
from shared.rollout import SamplerConfig, Trajectory, micro_batches, sample
from shared.training import (
    EMA,
    FaultGuard,
    MeanTracker,
    FieldError,
    MetricsLogger,
    any_process,
    average_gradients,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    progress,
    restore_rng_state,
    save_checkpoint,
    setup_accelerator,
    to_dict,
)

__all__ = ["AdvantageFn", "build_reward_fn", "default_advantages", "resolve_selector", "train", "unit_weights"]


def build_reward_fn(rcfg):
    """One registered reward, or their weighted sum (shared.rewards.WeightedReward)."""
    from shared.rewards import WeightedReward, build_reward

    weights = rcfg.weights or [1.0] * len(rcfg.names)
    if len(rcfg.names) == 1 and weights[0] == 1.0:
        return build_reward(rcfg.names[0], **rcfg.kwargs.get(rcfg.names[0], {}))
    return WeightedReward(dict(zip(rcfg.names, weights, strict=True)), reward_kwargs=rcfg.kwargs)


def _layout(cfg: RunConfig, world: int) -> tuple[int, int, int]:
    """(local batch, part size, micro-batch) of one process; the rollout's micro-batches tile every part."""
    n = cfg.prompts.per_iteration * cfg.sample.group_size // world
    s = cfg.train.steps_per_rollout
    if n % s:
        raise ConfigError(f"train.steps_per_rollout = {s} does not divide the {n} samples per process. "
                          "Fix: change train.steps_per_rollout, prompts.per_iteration or sample.group_size.")
    part = n // s
    mb = cfg.sample.micro_batch_size or part
    if part % mb:
        raise ConfigError(f"sample.micro_batch_size = {mb} does not divide the {part} samples of one optimiser step. "
                          "Fix: pick a divisor, or 0 for the whole part.")
    return n, part, mb


def _score(reward, traj, guard: FaultGuard, device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Rewards (a non-finite one is replaced by its local group's finite mean and later gets advantage 0), the
    keep mask, and reward metrics over all processes."""
    raw = torch.as_tensor(reward(traj.images, traj.prompts, traj.metadata)).detach().float().cpu().reshape(-1)
    keep = guard.check_rewards(raw).keep
    filled = raw.clone()
    for i in (~keep).nonzero().flatten().tolist():
        same = (traj.group_ids == traj.group_ids[i]) & keep
        filled[i] = raw[same].mean() if same.any() else 0.0
    all_raw = gather_rewards(raw.to(device), traj.group_ids.to(device))[0].cpu()
    finite = all_raw[torch.isfinite(all_raw)]
    metrics = {"reward_mean": finite.mean().item() if finite.numel() else math.nan,
               "reward_std": finite.std(unbiased=False).item() if finite.numel() else math.nan}
    for name, values in getattr(reward, "last_components", {}).items():
        if name != "total":
            metrics[f"reward/{name}"] = values.float().mean().item()
    return filled, keep, metrics


def resolve_selector(cfg: RunConfig, selector: UnitSelector | None) -> UnitSelector:
    """``selector`` if given (whatever ``train.units`` says), else the built-in named by ``train.units``."""
    if selector is not None:
        if not callable(selector):
            raise TypeError(f"selector must be a UnitSelector (a callable), got {type(selector).__name__}")
        return selector
    if cfg.train.units == "custom":
        raise FieldError("train.units", "custom", "needs a selector object, and none was passed to train()",
                         "call train(cfg, selector=...) (as chunk_grpo does) or set {field} to in_order, random "
                         "or chunks")
    return build_selector(cfg.train, window=len(cfg.sample.sde_steps) if cfg.sample.sde_steps else None)


def _needs_reference(cfg: RunConfig, main: bool) -> bool:
    """π_ref is needed by the KL (every process) and by hybrid evaluation or grids (the main process)."""
    hybrid = cfg.run.eval_hybrid_steps > 0 and (cfg.run.eval_every > 0 or cfg.run.grids)
    return cfg.train.kl_beta > 0 or (hybrid and main)


def unit_weights(units: Units, part_size: int) -> torch.Tensor:
    """(B,) w_i = 1/(n_i·B_part): Σ_slots Σ_i w_i·ℓ_ij over a part's micro-batches = mean_i mean_{j<n_i} ℓ_ij."""
    return torch.tensor([1.0 / (len(u) * part_size) for u in units], dtype=torch.float32)


@dataclass
class _Loop:
    """What the update needs besides the rollout."""

    cfg: RunConfig
    policy: Policy
    reference: Reference | None
    optimizer: torch.optim.Optimizer
    guard: FaultGuard
    ema: EMA | None
    accelerator: Any
    scfg: SamplerConfig
    part: int
    mb: int


def trained_rows(adv: torch.Tensor, rows: list[int], *, kl_beta: float, skip_zero: bool) -> list[int]:
    """The rows of ``rows`` the update must run: all, or (``skip_zero`` and no KL) those with a non-zero advantage.

    Without the KL term a row's loss is −A·(clipped ratio), whose gradient is exactly zero when A = 0 (a group
    whose rewards are all equal, under every advantage here), so leaving it out changes no gradient: the unit
    weights 1/(n_i·B_part) do not depend on which rows run. Only the ratio / clip metrics then cover fewer rows."""
    if not skip_zero or kl_beta > 0:
        return rows
    return [i for i in rows if adv[i] != 0]


def _backward_part(loop: _Loop, traj: Trajectory, adv: torch.Tensor, units: Units, lo: int, stats: MeanTracker) -> None:
    """Accumulate the gradient of one part [lo, lo + part): per micro-batch, one backward per unit slot (rows with
    a zero advantage left out when ``train.skip_zero_advantage``, see :func:`trained_rows`)."""
    t = loop.cfg.train
    skipped = 0
    for sl in micro_batches(loop.part, loop.mb):
        every = list(range(lo + sl.start, lo + sl.stop))
        rows = trained_rows(adv, every, kl_beta=t.kl_beta, skip_zero=t.skip_zero_advantage)
        skipped += len(every) - len(rows)
        if not rows:
            continue
        sub, sub_units = traj.select(rows), [units[i] for i in rows]
        weights = unit_weights(sub_units, loop.part)
        for slot in slots(sub_units):
            with loop.accelerator.autocast():
                out = slot_loss(loop.policy.adapter, sub, slot, adv[rows], weights, loop.scfg, clip_low=t.clip_low,
                                clip_high=t.clip_high or None, kl_beta=t.kl_beta, kl_convention=t.kl_convention,
                                reference=loop.reference, batched=t.batched_units)
            loop.guard.check_loss(out.loss)
            loop.accelerator.backward(out.loss)
            stats.add(out.metrics)
    stats.add({"rows_skipped": skipped / loop.part})
    if skipped:  # as if the skipped rows had run: a zero gradient, never a missing one
        for p in loop.policy.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)


def _optimiser_step(loop: _Loop, stats: MeanTracker) -> bool:
    """Average gradients over processes, clip, step (skipped on non-finite values), EMA."""
    average_gradients(loop.policy.params)
    named = list(zip(loop.policy.names, loop.policy.params, strict=True))
    max_norm = loop.cfg.train.max_grad_norm or math.inf
    if not loop.guard.step(loop.optimizer, named, max_grad_norm=max_norm,
                           clip_grad_norm=loop.accelerator.clip_grad_norm_):
        return False
    stats.add({"grad_norm": loop.guard.last_grad_norm})
    if loop.ema is not None:
        loop.ema.update()
    return True


def _update(loop: _Loop, traj: Trajectory, adv: torch.Tensor, units: Units, stats: MeanTracker) -> int:
    """One pass over the rollout: per part, accumulate every slot's loss, then one optimiser step."""
    steps = 0
    for lo in range(0, traj.batch_size, loop.part):
        _backward_part(loop, traj, adv, units, lo, stats)
        steps += _optimiser_step(loop, stats)
    return steps


class AdvantageFn(Protocol):
    """(this process's rewards, their group ids, iteration, total iterations) → advantages for these rows.

    Called on every process with its own rows; a global statistic must gather across processes itself (as
    :func:`shared.advantages.distributed_group_advantages` does). The result is an
    :class:`~shared.advantages.AdvantageOutput`; if it has a ``stats()`` method, its dict is logged as ``adv/<key>``.
    """

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor, *, iteration: int,
                 total: int) -> AdvantageOutput: ...


def default_advantages(cfg: RunConfig) -> AdvantageFn:
    """The advantage named by ``train.adv_std`` (batch: Flow-GRPO, group: DanceGRPO, none), with ``adv_eps``,
    ``adv_unbiased`` and ``adv_clip``, statistics over all processes."""
    t = cfg.train

    def fn(rewards: torch.Tensor, group_ids: torch.Tensor, *, iteration: int, total: int) -> AdvantageOutput:
        return distributed_group_advantages(rewards, group_ids, std=t.adv_std, eps=t.adv_eps,
                                            unbiased=t.adv_unbiased, clip=t.adv_clip or None)

    return fn


def train(cfg: RunConfig, *, pipeline=None, selector: UnitSelector | None = None,
          advantages: AdvantageFn | None = None) -> dict:
    """Run (or resume) the training described by ``cfg``; return the last metrics record.

    ``cfg``: a validated RunConfig or subclass. ``pipeline``: an already built diffusers pipeline to train instead
    of loading ``cfg.model.path``. ``selector``: the :class:`~shared.flow_grpo.units.UnitSelector` to use whatever
    ``train.units`` says (required for ``train.units = "custom"``); it is called as
    ``selector(num_steps, n_local, generator, traj=traj)`` with this process's rollout. ``advantages``: an
    :class:`AdvantageFn` replacing the ``train.adv_*`` advantage (slas's shaped advantages); None =
    :func:`default_advantages`.
    """
    run_dir, t = Path(cfg.run.dir), cfg.train
    selector = resolve_selector(cfg, selector)
    advantages = advantages or default_advantages(cfg)
    ckpt_dir = run_dir / "checkpoints"
    ckpt = latest_checkpoint(ckpt_dir) if cfg.run.resume else None
    state = load_checkpoint(ckpt) if ckpt else None  # verified before any model is built
    pool = load_prompt_pool(cfg.prompts, t.seed)
    accelerator = setup_accelerator(mixed_precision=cfg.model.mixed_precision if torch.cuda.is_available() else "no",
                                    seed=t.seed, cpu=cfg.model.cpu)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    n_local, part, mb = _layout(cfg, world)
    policy = build_policy(cfg, accelerator.device, pipeline=pipeline)
    scfg, ode_cfg = sampler_config(cfg, policy, mb), sampler_config(cfg, policy, mb, ode=True)
    reward = build_reward_fn(cfg.reward)
    # built before the checkpoint is loaded, so a full fine-tune's copy holds the initial weights
    reference = Reference(policy.adapter, lora=policy.lora) if _needs_reference(cfg, main) else None
    hybrid = Hybrid(reference.model, cfg.run.eval_hybrid_steps) if reference and cfg.run.eval_hybrid_steps else None
    optimizer = accelerator.prepare(torch.optim.AdamW(policy.params, lr=t.lr, weight_decay=t.weight_decay,
                                                      eps=t.adam_eps))
    ema = EMA(policy.params, t.ema_decay, t.ema_every) if t.ema_decay > 0 else None
    averaged = (lambda: ema.average_parameters()) if ema else contextlib.nullcontext
    records, shapes_world = eval_records(cfg, pool), cfg.prompts.source == "shapes"
    grid_records = records[:: max(1, len(records) // 12)][:12]
    it_box = [0]

    def save(iteration: int) -> None:
        if main:
            save_checkpoint(ckpt_dir, iteration, {
                "model": policy.trainable_state(), "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema else None, "faults": guard.state_dict(), "rng": capture_rng_state(),
                "trainer": {"iteration": iteration}, "config": to_dict(cfg)}, keep_last=cfg.run.keep_last)
        accelerator.wait_for_everyone()

    def run_eval() -> dict:
        kw = dict(seed=cfg.run.eval_seed, shapes=shapes_world, autocast=accelerator.autocast)
        out = evaluate(policy.adapter, records, reward, ode_cfg, **kw)
        if hybrid is not None:
            out.update(evaluate(policy.adapter, records, reward, ode_cfg, hybrid=hybrid, **kw))
        return out

    def grid(name: str, with_hybrid: bool = False) -> None:
        kw = dict(seed=cfg.run.eval_seed, autocast=accelerator.autocast)
        save_grid(policy.adapter, grid_records, ode_cfg, run_dir / f"{name}.png", **kw)
        if with_hybrid and hybrid is not None:
            save_grid(policy.adapter, grid_records, ode_cfg, run_dir / f"{name}_hybrid.png", hybrid=hybrid, **kw)

    guard = FaultGuard(t.max_consecutive_faults, on_abort=lambda: save(it_box[0]))
    loop = _Loop(cfg, policy, reference, optimizer, guard, ema, accelerator, scfg, part, mb)
    start = 0
    if state is not None:
        policy.load_trainable_state(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        guard.load_state_dict(state["faults"])
        start = int(state["trainer"]["iteration"])
        restore_rng_state(state["rng"])
    logger = MetricsLogger(run_dir, resume_step=start if state else None, enabled=main)
    if start == 0 and main:
        if cfg.run.grids:
            grid("samples_before")
        if cfg.run.eval_every:
            logger.log(run_eval(), 0)

    last: dict = {}
    bar = progress(range(start + 1, t.iterations + 1), initial=start, desc="flow-grpo",
                   disable=not (main and cfg.run.progress))
    for it in bar:
        it_box[0] = it
        tic = time.perf_counter()
        # 1. prompts and grouped rollouts (SDE, per-step log-probs recorded)
        batch = local_batch(pool, iteration=it, seed=t.seed, per_iteration=cfg.prompts.per_iteration,
                            group_size=cfg.sample.group_size, spread=cfg.prompts.spread_groups, world_size=world,
                            rank=rank)
        gen = torch.Generator().manual_seed(mix_seed(t.seed, it, rank, 1))
        with accelerator.autocast():
            traj = sample(policy.adapter, [r["prompt"] for r in batch.records], scfg, group_size=batch.group_size,
                          generator=gen, metadata=batch.records)
        traj = dataclasses.replace(traj, group_ids=batch.group_ids)
        # 2. rewards and advantages over all processes
        rewards, keep, metrics = _score(reward, traj, guard, accelerator.device)
        adv_out = advantages(rewards.to(accelerator.device), traj.group_ids.to(accelerator.device), iteration=it,
                             total=t.iterations)
        adv = torch.where(keep, adv_out.advantages.float().cpu(), torch.zeros(keep.shape))
        metrics.update(zero_std_ratio=adv_out.zero_std_fraction, mean_group_std=adv_out.mean_group_std,
                       adv_abs_mean=adv.abs().mean().item(), time_rollout_s=time.perf_counter() - tic)
        if callable(getattr(adv_out, "stats", None)):
            metrics.update({f"adv/{k}": float(v) for k, v in adv_out.stats().items()})
        # 3. units chosen on this rollout; clipped loss slot by slot, one optimiser step per part
        stats, n_steps = MeanTracker(), 0
        unit_gen = torch.Generator().manual_seed(mix_seed(t.seed, it, rank, 2))
        for _ in range(t.inner_epochs if any_process(bool(keep.any()), accelerator.device) else 0):  # else: all rewards bad
            units = check_units(selector(cfg.sample.num_steps, n_local, unit_gen, traj=traj), batch=n_local,
                                sde_mask=traj.sde_mask)
            n_steps += _update(loop, traj, adv, units, stats)
        metrics.update({k: v for k, v in guard.metrics().items() if k != "grad_norm"}, **stats.result(),
                       optimizer_steps=n_steps, time_iteration_s=time.perf_counter() - tic)
        # 4. evaluation, logging, checkpoints
        if main and cfg.run.eval_every and (it % cfg.run.eval_every == 0 or it == t.iterations):
            with averaged():
                metrics.update(run_eval())
        last = logger.log(metrics, it)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}")
        if (cfg.run.save_every and it % cfg.run.save_every == 0) or it == t.iterations:
            save(it)

    if main and cfg.run.grids:
        with averaged():
            grid("samples_after", with_hybrid=True)
        save_curves(run_dir)
    logger.close()
    return last
