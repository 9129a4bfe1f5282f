"""The GRPO objective over trained units, with the optional Flow-GRPO KL to a reference (shared_core.md §6).

Sample i of a part of B samples has units u_i0 … u_i(n_i−1) (lists of steps, :mod:`shared.flow_grpo.units`):

    log p_ij  = mean_{t∈u_ij} log p_θ(x_{t+1} | x_t)          (GCPO §4: the chunk log-prob is the mean of its steps)
    r_ij      = exp(log p_ij − log p_ij^old)                  (= geometric mean of the step ratios, GCPO Eq. 14–15)
    ℓ_ij      = max(−A_i·r_ij, −A_i·clip(r_ij, 1−ε_low, 1+ε_high))       via shared.losses.clipped_surrogate
    KL_ij     = mean_{t∈u_ij} mean_d (μ_θ,t − μ_ref,t)² / (2·g_t²)       (convention "exact": / (2·g_t²·(−Δ_t)))
    J         = mean_i mean_{j<n_i} (ℓ_ij + β·KL_ij)

log p^old is the value recorded at sampling time; the outcome advantage A_i is copied to every unit. With equal
layouts J is the anchors' per-step (per-chunk) mean, i.e. `seq_mean_token_mean` aggregation [authors' code:
flow_grpo `train_sd3.py`, DanceGRPO `train_grpo_flux.py`, GCPO `train_grpo_flux_hpsv3.py`].

The trainer backpropagates one **slot** at a time (unit j of every sample that has one, :class:`~.units.Slot`):
:func:`slot_loss` returns Σ_{i: n_i>j} w_i·(ℓ_ij + β·KL_ij) with w_i = 1/(n_i·B), so the gradients accumulated
over slots and micro-batches are exactly ∇J. Because w_i > 0, w_i·ℓ_ij is the clipped surrogate with advantage
w_i·A_i (max is positively homogeneous), which is how the weight enters shared.losses.clipped_surrogate.

Forwards (chunk_grpo.md §4 "batched chunk forward"): ``batched=True`` puts all Σ_i |u_ij| (sample, step) pairs of
a slot through the transformer in ONE forward (per-row steps and sigmas) and segment-means the step log-probs back
per sample; ``batched=False`` runs one forward per step position p (the samples whose unit has > p steps). Both
give the same numbers to fp32 tolerance.

The reference for the KL and for hybrid evaluation is the same network with its LoRA adapter disabled, or a frozen
copy of the initial transformer for a full fine-tune; with β = 0 and no hybrid evaluation none is built and no
reference forward runs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from shared.flow_grpo.units import Slot
from shared.losses import clipped_surrogate, gaussian_mean_kl
from shared.rollout import FlowModelAdapter, SamplerConfig, Trajectory, step_log_prob
from shared.sde import SDEStepOutput

__all__ = ["Reference", "SlotScores", "UnitLoss", "segment_mean", "slot_loss", "slot_scores", "unit_log_prob",
           "unit_ratio"]


def unit_log_prob(step_log_probs: Tensor) -> Tensor:
    """(B, c) step log-probs of a unit of c steps → (B,) unit log-prob, their mean."""
    if step_log_probs.ndim != 2 or step_log_probs.shape[1] == 0:
        raise ValueError(f"step_log_probs must have shape (B, c) with c >= 1, got {tuple(step_log_probs.shape)}")
    return step_log_probs.mean(dim=1)


def unit_ratio(step_log_probs: Tensor, old_step_log_probs: Tensor) -> Tensor:
    """(B,) unit ratio exp(mean_t (log p_t − log p_t^old)): the geometric mean of the c step ratios."""
    return torch.exp(unit_log_prob(step_log_probs) - unit_log_prob(old_step_log_probs))


def segment_mean(values: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """(N,) values, (N,) segment ids in [0, R) → (R,) per-segment means (every segment non-empty); differentiable."""
    segments = segments.to(values.device)
    sums = values.new_zeros(num_segments).index_add(0, segments, values)
    counts = torch.bincount(segments, minlength=num_segments).to(values.dtype)
    return sums / counts


class _LoraDisabled:
    """A FlowModelAdapter view of ``adapter`` whose velocity runs with the LoRA adapters disabled."""

    def __init__(self, adapter: FlowModelAdapter):
        self._adapter = adapter

    def __getattr__(self, name: str):
        return getattr(self._adapter, name)

    @contextlib.contextmanager
    def _disabled(self) -> Iterator[None]:
        self._adapter.transformer.disable_adapters()
        try:
            yield
        finally:
            self._adapter.transformer.enable_adapters()

    def velocity(self, *args, **kwargs) -> Tensor:
        with self._disabled():
            return self._adapter.velocity(*args, **kwargs)


class Reference:
    """π_ref: the trained transformer with LoRA disabled, or a frozen copy of it taken now (full fine-tune).

    ``model`` is a FlowModelAdapter of π_ref (the KL's and hybrid evaluation's base model). ``step(traj, steps,
    cfg)`` re-scores stored transitions under π_ref without gradients; ``calls`` counts those re-scorings.
    """

    def __init__(self, adapter: FlowModelAdapter, *, lora: bool):
        self.lora = lora
        if lora:
            self.model = _LoraDisabled(adapter)
        else:
            self.model = copy.copy(adapter)  # shares pipeline and text encoders; only the transformer is copied
            self.model.transformer = copy.deepcopy(adapter.transformer).requires_grad_(False).eval()
        self.calls = 0

    @torch.no_grad()
    def step(self, traj: Trajectory, steps: Tensor, cfg: SamplerConfig, *, rows: Tensor | None = None) -> SDEStepOutput:
        self.calls += 1
        return step_log_prob(self.model, traj, steps, cfg, rows=rows)


@dataclass
class SlotScores:
    """Per sample r of a slot: ``new`` (R,) unit log-probs under θ (with graph), ``old`` (R,) the recorded ones,
    ``kl`` (R,) the unit's mean step KL to the reference (None without a reference)."""

    new: Tensor
    old: Tensor
    kl: Tensor | None


def _score_pairs(adapter, traj: Trajectory, rows: Tensor, steps: Tensor, cfg: SamplerConfig,
                 reference: Reference | None, kl_convention: str) -> tuple[Tensor, Tensor | None]:
    """One forward over the (row, step) pairs: (N,) step log-probs and (N,) step KLs (None without reference)."""
    out = step_log_prob(adapter, traj, steps, cfg, rows=rows)
    if reference is None:
        return out.log_prob, None
    ref = reference.step(traj, steps, cfg, rows=rows)
    delta = (traj.sigmas[steps + 1] - traj.sigmas[steps]).to(out.mean.device)
    return out.log_prob, gaussian_mean_kl(out.mean, ref.mean, out.std, step_delta=delta, convention=kl_convention)


def slot_scores(adapter, traj: Trajectory, slot: Slot, cfg: SamplerConfig, *, batched: bool = True,
                reference: Reference | None = None, kl_convention: str = "flow_grpo") -> SlotScores:
    """Unit log-probs (and KLs) of ``slot`` over the rows of ``traj``.

    ``batched``: one transformer forward for all Σ_r |u_r| pairs; else one forward per step position.
    ``cfg.micro_batch_size`` is ignored: the caller passes one micro-batch.
    """
    one = replace(cfg, micro_batch_size=None)
    rows, steps, segments = slot.flat()
    if batched:
        lp, kl = _score_pairs(adapter, traj, rows, steps, one, reference, kl_convention)
    else:
        positions = torch.tensor([p for unit in slot.steps for p in range(len(unit))], dtype=torch.long)
        order = [(positions == p).nonzero().flatten() for p in range(slot.max_size)]
        pieces = [_score_pairs(adapter, traj, rows[k], steps[k], one, reference, kl_convention) for k in order]
        back = torch.argsort(torch.cat(order)).to(traj.latents.device)  # position-major → sample-major
        lp = torch.cat([p[0] for p in pieces])[back]
        kl = None if reference is None else torch.cat([p[1] for p in pieces])[back]
    old = traj.log_probs[rows, steps].to(lp.device)
    n = len(slot)
    return SlotScores(new=segment_mean(lp, segments, n), old=segment_mean(old, segments, n),
                      kl=None if kl is None else segment_mean(kl, segments, n))


@dataclass
class UnitLoss:
    """loss: scalar to backpropagate; metrics: floats (clip fractions, ratio stats, approx_kl, policy_loss, kl)."""

    loss: Tensor
    metrics: dict[str, float]


def slot_loss(
    adapter,
    traj: Trajectory,
    slot: Slot,
    advantages: Tensor,
    weights: Tensor,
    cfg: SamplerConfig,
    *,
    clip_low: float,
    clip_high: float | None = None,
    kl_beta: float = 0.0,
    kl_convention: str = "flow_grpo",
    reference: Reference | None = None,
    batched: bool = True,
) -> UnitLoss:
    """Σ_r w_r·(ℓ_r + β·KL_r) over the samples r of ``slot`` (see the module doc).

    ``advantages`` and ``weights``: (B,) over the rows of ``traj``; weights must be > 0 (the trainer uses
    1/(n_i·B_part)). Metrics are unweighted over the slot's samples: clipfrac_low/high, ratio_mean/min/max,
    approx_kl, policy_loss (mean ℓ_r) and, with β > 0, kl (mean KL_r).
    """
    if kl_beta > 0 and reference is None:
        raise ValueError("kl_beta > 0 needs a Reference")
    if not bool((weights > 0).all()):
        raise ValueError("slot_loss weights must be > 0")
    scores = slot_scores(adapter, traj, slot, cfg, batched=batched, reference=reference if kl_beta > 0 else None,
                         kl_convention=kl_convention)
    idx = torch.tensor(slot.rows, dtype=torch.long)
    adv = advantages[idx].to(scores.new.device)
    w = weights[idx].to(scores.new.device, scores.new.dtype)
    # w·ℓ(A) = ℓ(w·A) for w > 0; the surrogate means over the R samples, hence the factor R.
    loss = clipped_surrogate(scores.new, scores.old, adv * w * len(slot), clip_low=clip_low, clip_high=clip_high).loss
    with torch.no_grad():
        plain = clipped_surrogate(scores.new, scores.old, adv, clip_low=clip_low, clip_high=clip_high)
    metrics = dict(plain.metrics, policy_loss=plain.loss.item())
    if scores.kl is not None:
        loss = loss + kl_beta * (w * scores.kl).sum()
        metrics["kl"] = scores.kl.mean().item()
    return UnitLoss(loss=loss, metrics=metrics)
