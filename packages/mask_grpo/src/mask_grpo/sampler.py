"""The unmasking sampler with trajectory recording (mask_grpo.md §2, §4, §9).

One iteration t of T, from Y_t (masked positions M_t) [Show-o `t2i_generate`, diffusers `AmusedScheduler.step`]:
1. logits l (B, N, K) from one forward (CFG l = l_u + w·(l_c − l_u) when w ≠ 1), p = softmax(l) in float32;
2. y_i ~ p_i at every position (one `torch.multinomial` over the flattened (B·N, K) probabilities); known positions
   keep their token;
3. confidence c_i = p_i(y_i) on M_t, float32 max on known positions;
4. n_mask = `schedules.num_masked_after`; the last iteration commits everything;
5. re-mask R_t = the positions whose noisy confidence log c_i + τ_t·g_i (g ~ Gumbel(0, 1), one uniform (B, N) draw)
   lies below the n_mask-th smallest; the rest of M_t is committed (CaM_t).

Random numbers are drawn in diffusers' order (multinomial, then the uniform for the Gumbel noise, none at the last
iteration), so with `temperature="amused"` and CFG off this reproduces `AmusedPipeline`'s tokens for a seeded
generator (tested in tests/test_amused_backend.py).

The trajectory records what the three transition log-probabilities and an exact replay need: the final tokens, the
iteration at which every position was committed (so Y_t = final tokens where committed before t, [MASK] elsewhere),
the tokens drawn at every iteration (for the AR-style probability, which scores re-masked draws too), and the
threshold κ_t = min_{i ∈ CaM_t} c_i as a float32 (the released code stores it in a bool tensor: card §8). It also
carries the three log-probabilities of every transition under the sampling policy (`log_probs[kind]`, (B, T)),
the "old" log-probs of the GRPO ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mask_grpo.logprobs import KINDS, step_terms, combine
from mask_grpo.policy import Cond, MaskedPolicy, guided_logits, num_tokens
from mask_grpo.schedules import SCHEDULES, TEMPERATURE_FORMS, choice_temperatures, num_masked_after


@dataclass(frozen=True)
class SamplerConfig:
    """steps T; mask `schedule` (`schedules.SCHEDULES`, `exponent` for "pow"); choice-temperature `temperature` form
    with `tau0` (maskgit/showo) or `amused_range` (amused); `cfg_scale` w in l_u + w·(l_c − l_u) (1 = off; the paper's
    rollouts use no guidance, its evaluation Show-o's 5, i.e. w = 6)."""

    steps: int = 8
    schedule: str = "cosine"
    exponent: float = 2.0
    temperature: str = "showo"
    tau0: float = 1.0
    amused_range: tuple[float, float] = (2.0, 0.0)
    cfg_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"sampler steps must be an integer >= 1, got {self.steps!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"sampler schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.temperature not in TEMPERATURE_FORMS:
            raise ValueError(f"sampler temperature must be one of {TEMPERATURE_FORMS}, got {self.temperature!r}")
        if not self.tau0 >= 0:
            raise ValueError(f"sampler tau0 must be >= 0, got {self.tau0!r}")
        if not self.cfg_scale >= 0:
            raise ValueError(f"sampler cfg_scale must be >= 0 (1 = no guidance), got {self.cfg_scale!r}")

    def temperatures(self) -> Tensor:
        return choice_temperatures(self.steps, self.temperature, self.tau0, self.amused_range)

    def schedule_kwargs(self) -> dict:
        return {"exponent": self.exponent} if self.schedule == "pow" else {}


@dataclass
class Trajectory:
    """A recorded rollout of B samples over T iterations (module doc). Shapes: tokens, commit_step (B, N);
    samples (B, T, N); kappa (B, T) float32; log_probs[kind] (B, T) float32 for kind in `logprobs.KINDS`."""

    tokens: Tensor
    commit_step: Tensor
    samples: Tensor
    kappa: Tensor
    mask_id: int
    log_probs: dict[str, Tensor] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.samples.shape[1])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def state(self, t: int) -> Tensor:
        """Y_t: the final token where the position was committed before iteration t, [MASK] elsewhere."""
        return torch.where(self.commit_step < t, self.tokens, torch.full_like(self.tokens, self.mask_id))

    def masked(self, t: int) -> Tensor:
        """M_t (B, N) bool: masked before iteration t."""
        return self.commit_step >= t

    def committed(self, t: int) -> Tensor:
        """CaM_t (B, N) bool: committed at iteration t."""
        return self.commit_step == t

    def index(self, idx: Tensor | Sequence[int]) -> Trajectory:
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.tokens.device)
        return Trajectory(self.tokens[idx], self.commit_step[idx], self.samples[idx], self.kappa[idx], self.mask_id,
                          {k: v[idx] for k, v in self.log_probs.items()})

    @staticmethod
    def cat(trajs: Sequence[Trajectory]) -> Trajectory:
        if not trajs:
            raise ValueError("Trajectory.cat needs at least one trajectory")
        return Trajectory(torch.cat([t.tokens for t in trajs]), torch.cat([t.commit_step for t in trajs]),
                          torch.cat([t.samples for t in trajs]), torch.cat([t.kappa for t in trajs]), trajs[0].mask_id,
                          {k: torch.cat([t.log_probs[k] for t in trajs]) for k in trajs[0].log_probs})


def _gumbel(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """g = −log(−log u), u ~ U(0, 1) with diffusers' clamps (`scheduling_amused.gumbel_noise`)."""
    device = generator.device if generator is not None else like.device
    u = torch.zeros_like(like, device=device).uniform_(0, 1, generator=generator).to(like.device)
    return -torch.log((-torch.log(u.clamp(1e-20))).clamp(1e-20))


@torch.no_grad()
def sample(
    policy: MaskedPolicy,
    prompts: Sequence[str] | None,
    config: SamplerConfig = SamplerConfig(),
    *,
    generator: torch.Generator | None = None,
    cond: Cond | None = None,
    uncond: Cond | None = None,
    record: bool = True,
) -> Trajectory:
    """Generate B = len(prompts) token grids, recording the trajectory (module doc). `cond`/`uncond` may be passed
    precomputed (then `prompts` may be None); `uncond` defaults to the encoding of "" when guidance is on.
    `record=False` is the plain sampler (the same draws and tokens; no per-step samples, κ or log-probs kept):
    the baseline of tools/bench/mask_rollout.py."""
    if cond is None:
        if not prompts:
            raise ValueError("sample() needs prompts or a precomputed cond")
        cond = policy.encode(list(prompts))
    batch = next(iter(cond.values())).shape[0]
    if config.cfg_scale != 1.0 and uncond is None:
        uncond = policy.encode([""] * batch)
    n, k, steps = num_tokens(policy), policy.codebook_size, config.steps
    device = next(iter(cond.values())).device
    taus = config.temperatures()

    tokens = torch.full((batch, n), policy.mask_id, dtype=torch.long, device=device)
    commit_step = torch.full((batch, n), steps, dtype=torch.long, device=device)
    samples = torch.empty((batch, steps if record else 0, n), dtype=torch.long, device=device)
    kappa = torch.zeros((batch, steps), dtype=torch.float32, device=device)
    terms: list[dict[str, Tensor]] = []
    for t in range(steps):
        masked = tokens == policy.mask_id
        logits = guided_logits(policy, tokens, cond, uncond, config.cfg_scale).float()
        probs = logits.softmax(dim=-1)
        flat = probs.to(generator.device) if generator is not None else probs
        drawn = torch.multinomial(flat.reshape(-1, k), 1, generator=generator).to(device)[:, 0].view(batch, n)
        if record:
            samples[:, t] = drawn
        proposal = torch.where(masked, drawn, tokens)
        conf = torch.gather(probs, -1, drawn[..., None])[..., 0]
        if t == steps - 1:
            remask = torch.zeros_like(masked)
        else:
            n_mask = num_masked_after(t, steps, n, masked.sum(dim=-1), config.schedule, **config.schedule_kwargs())
            known_conf = torch.where(masked, conf, torch.finfo(conf.dtype).max)
            noisy = torch.log(known_conf.clamp(1e-20)) + taus[t].item() * _gumbel(known_conf, generator)
            cut = torch.gather(torch.sort(noisy, dim=-1).values, 1, n_mask[:, None])
            remask = noisy < cut
        committed = masked & ~remask
        if record:
            kappa[:, t] = torch.where(committed, conf, torch.full_like(conf, float("inf"))).amin(dim=-1)
            terms.append(step_terms(logits, drawn, masked, committed, kappa[:, t]))
        commit_step = torch.where(committed, torch.full_like(commit_step, t), commit_step)
        tokens = torch.where(remask, torch.full_like(proposal, policy.mask_id), proposal)
    log_probs = {kind: torch.stack([combine(kind, tm) for tm in terms], dim=1) for kind in KINDS} if record else {}
    return Trajectory(tokens, commit_step, samples, kappa, policy.mask_id, log_probs)
