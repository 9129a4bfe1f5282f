"""The three transition log-probabilities log π_θ(Y_{t+1} | c, t, Y_t) of an unmasking step (mask_grpo.md §4).

At iteration t: M_t = positions masked before the step, CaM_t ⊆ M_t = positions committed, R_t = M_t \\ CaM_t =
positions re-masked, y_i = the token drawn at position i, p^i = softmax(l^i) its predicted distribution, and the
threshold κ_t = min_{i ∈ CaM_t} p^i(y_i) (a float, recorded at sampling and a constant in replay).

    AR-style    Σ_{i ∈ M_t} log p^i(y_i)                                       (every drawn token, re-masked ones too)
    p_θ1        Σ_{i ∈ CaM_t} log p^i(y_i) + Σ_{i ∈ R_t} log Σ_{k : p^i(k) < κ_t} p^i(k)      (Eq. 14, the default)
    p_θ2        Σ_{i ∈ CaM_t} log p^i(y_i)                                     (Eq. 15)

p_θ1's second factor is the probability that a re-masked position's confidence fell below every committed one: the
mass of the tokens whose own probability is below κ_t. The set {k : p^i(k) < κ_t} is chosen without gradient; the
gradient flows through the probabilities summed. The mass is floored at `floor` (1e-12) before the log, since the
set can be empty (card §4, implementation rules). Positions unmasked before t contribute nothing. Everything is
computed in float32 from the logits the sampler used (guided when CFG is on).

With a float κ strictly between 0 and 1 the re-mask factor is a proper log-mass < 0; the authors' released code
stores κ in a bool buffer (κ = True = 1.0), so every token counts as below, the factor is log 1 = 0 and p_θ1
silently becomes p_θ2 (card §8). `tests/test_logprobs.py` checks both on a hand-computed distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor

KINDS = ("p1", "p2", "ar")
"""`p1`: the paper's p_θ1 (default); `p2`: committed tokens only; `ar`: AR-style over all masked positions."""

DEFAULT_FLOOR = 1e-12


def step_terms(logits: Tensor, drawn: Tensor, masked: Tensor, committed: Tensor, kappa: Tensor, *,
               floor: float = DEFAULT_FLOOR, below: bool = True) -> dict[str, Tensor]:
    """The per-sample pieces of one transition, each (B,) float32.

    logits (B, N, K) (guided if the sampler guided); drawn (B, N) tokens drawn at this step; masked (B, N) bool M_t;
    committed (B, N) bool CaM_t ⊆ M_t; kappa (B,) the threshold κ_t. Returns
    `commit` = Σ_{CaM_t} log p(y), `remask_drawn` = Σ_{R_t} log p(y), `remask_below` = Σ_{R_t} log max(mass_<κ, floor).
    `below=False` skips `remask_below` (a (B, N, K) pass only p_θ1 needs).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok_logp = torch.gather(logp, -1, drawn[..., None].long())[..., 0]
    remasked = masked & ~committed
    zero = torch.zeros_like(tok_logp)
    commit = torch.where(committed, tok_logp, zero).sum(dim=-1)
    remask_drawn = torch.where(remasked, tok_logp, zero).sum(dim=-1)
    terms = {"commit": commit, "remask_drawn": remask_drawn}
    if below:
        probs = logp.exp()
        is_below = probs.detach() < kappa.detach().float()[:, None, None]
        log_mass = torch.log((probs * is_below).sum(dim=-1).clamp(min=floor))
        terms["remask_below"] = torch.where(remasked, log_mass, zero).sum(dim=-1)
    return terms


def combine(kind: str, terms: dict[str, Tensor]) -> Tensor:
    """log π for `kind` in `KINDS` from `step_terms`' pieces."""
    if kind == "p1":
        return terms["commit"] + terms["remask_below"]
    if kind == "p2":
        return terms["commit"]
    if kind == "ar":
        return terms["commit"] + terms["remask_drawn"]
    raise ValueError(f"log-prob kind must be one of {KINDS}, got {kind!r}")


def transition_log_prob(kind: str, logits: Tensor, drawn: Tensor, masked: Tensor, committed: Tensor, kappa: Tensor,
                        *, floor: float = DEFAULT_FLOOR) -> Tensor:
    """log π_θ(a_t | s_t) (B,) of one transition under `kind` (module doc)."""
    if kind not in KINDS:
        raise ValueError(f"log-prob kind must be one of {KINDS}, got {kind!r}")
    return combine(kind, step_terms(logits, drawn, masked, committed, kappa, floor=floor, below=kind == "p1"))
