"""The recording unmasking sampler: schedules against diffusers, replay exactness, on-policy ratio 1 (card §2, §4, §9)."""

from __future__ import annotations

import math

import pytest
import torch
from mask_grpo.toy import ToyPolicy
from diffusers import AmusedScheduler

from mask_grpo.policy import MaskedPolicy
from mask_grpo.replay import replay_log_probs
from mask_grpo.sampler import SamplerConfig, sample
from mask_grpo.schedules import choice_temperatures, mask_ratio, num_masked_after

PROMPTS = ["p 1", "p 2", "p 3", "p 1"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("n,steps", [(16, 4), (64, 8), (1024, 12), (12, 5)])
def test_masked_counts_match_diffusers_amused_scheduler(schedule, n, steps):
    """After every step, diffusers' scheduler leaves exactly as many masks as num_masked_after says."""
    sched = AmusedScheduler(mask_token_id=9, masking_schedule=schedule)
    sched.set_timesteps(steps, temperature=(0.0, 0.0))
    sample_ = torch.full((1, n), 9, dtype=torch.long)
    g = _gen()
    for t, timestep in enumerate(sched.timesteps):
        masked_now = int((sample_ == 9).sum())
        out = sched.step(torch.randn(1, n, 9, generator=g), timestep, sample_, generator=g)
        sample_ = out.prev_sample
        ours = num_masked_after(t, steps, n, torch.tensor([masked_now]), schedule)
        assert int((sample_ == 9).sum()) == int(ours)


def test_schedule_values():
    assert mask_ratio(0, 2, "cosine").item() == pytest.approx(math.cos(math.pi / 4))
    assert mask_ratio(1, 4, "linear").item() == pytest.approx(0.5)
    assert mask_ratio(1, 4, "pow", exponent=2.0).item() == pytest.approx(0.75)
    sig = [mask_ratio(t, 4, "sigmoid").item() for t in range(4)]
    assert sig[-1] == pytest.approx(0.0, abs=1e-6) and all(a > b for a, b in zip(sig, sig[1:]))
    with pytest.raises(ValueError, match="schedule"):
        mask_ratio(0, 4, "exp")


def test_choice_temperature_forms():
    assert choice_temperatures(4, "maskgit", 1.0).tolist() == pytest.approx([0.75, 0.5, 0.25, 0.0])
    # Show-o compounds: 0.75, 0.75·0.5, 0.75·0.5·0.25, 0
    assert choice_temperatures(4, "showo", 1.0).tolist() == pytest.approx([0.75, 0.375, 0.09375, 0.0])
    sched = AmusedScheduler(mask_token_id=9)
    sched.set_timesteps(5, temperature=(2, 0))
    assert torch.allclose(choice_temperatures(5, "amused", amused_range=(2.0, 0.0)), sched.temperatures)
    sched.set_timesteps(5, temperature=3)
    assert torch.allclose(choice_temperatures(5, "amused", amused_range=3.0), sched.temperatures)


class Recorder:
    """Wraps a policy and records every token grid it is asked to score."""

    def __init__(self, policy):
        self.policy, self.seen = policy, []
        self.mask_id, self.codebook_size, self.grid = policy.mask_id, policy.codebook_size, policy.grid

    def encode(self, prompts):
        return self.policy.encode(prompts)

    def logits(self, tokens, cond):
        self.seen.append(tokens.clone())
        return self.policy.logits(tokens, cond)

    def decode(self, tokens):
        return self.policy.decode(tokens)

    def trainable(self):
        return self.policy


@pytest.mark.parametrize("form", ["showo", "maskgit", "amused"])
def test_replay_rebuilds_every_state_exactly(form):
    rec = Recorder(ToyPolicy(codebook_size=6, grid=(3, 4)))
    assert isinstance(rec, MaskedPolicy)
    traj = sample(rec, PROMPTS, SamplerConfig(steps=6, temperature=form), generator=_gen(1))
    assert len(rec.seen) == 6
    for t, seen in enumerate(rec.seen):
        assert torch.equal(traj.state(t), seen)
    # every position is committed once, to the token drawn at its commit step; nothing stays masked
    assert (traj.tokens != rec.mask_id).all()
    assert torch.equal(traj.tokens, torch.gather(traj.samples, 1, traj.commit_step[:, None, :])[:, 0])
    # the same number of commits per step for every rollout (depends only on N, T, t)
    counts = torch.stack([traj.committed(t).sum(dim=1) for t in range(6)], dim=1)
    assert (counts == counts[:1]).all() and counts.sum(dim=1).eq(12).all()


def test_kappa_is_the_lowest_committed_confidence():
    policy = ToyPolicy(codebook_size=6, grid=(3, 4))
    cfg = SamplerConfig(steps=5, tau0=0.0)  # no Gumbel noise: committed = the most confident
    traj = sample(policy, PROMPTS, cfg, generator=_gen(2))
    cond = policy.encode(PROMPTS)
    for t in range(5):
        probs = policy.logits(traj.state(t), cond).softmax(-1)
        conf = torch.gather(probs, -1, traj.samples[:, t, :, None])[..., 0]
        com, rem = traj.committed(t), traj.masked(t) & ~traj.committed(t)
        for b in range(len(PROMPTS)):
            assert traj.kappa[b, t].item() == pytest.approx(conf[b][com[b]].min().item(), rel=1e-6)
            if rem[b].any():  # with tau = 0 every re-masked confidence is below the threshold
                assert conf[b][rem[b]].max().item() <= traj.kappa[b, t].item()


@pytest.mark.parametrize("kind", ["p1", "p2", "ar"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_on_policy_replay_log_probs_equal_the_recorded_ones(kind, cfg_scale):
    policy = ToyPolicy(codebook_size=6, grid=(3, 4))
    traj = sample(policy, PROMPTS, SamplerConfig(steps=5, cfg_scale=cfg_scale), generator=_gen(3))
    cond = policy.encode(PROMPTS)
    uncond = policy.encode([""] * len(PROMPTS)) if cfg_scale != 1 else None
    lp = replay_log_probs(policy, traj, cond, range(5), kind, uncond=uncond, cfg_scale=cfg_scale)
    assert torch.allclose(lp, traj.log_probs[kind], atol=1e-5)
    sub = replay_log_probs(policy, traj, cond, [4, 1], kind, uncond=uncond, cfg_scale=cfg_scale)
    assert torch.allclose(sub, traj.log_probs[kind][:, [4, 1]], atol=1e-5)


def test_seeded_sampling_is_reproducible_and_index_cat_roundtrip():
    policy = ToyPolicy()
    a = sample(policy, PROMPTS, SamplerConfig(steps=4), generator=_gen(5))
    b = sample(policy, PROMPTS, SamplerConfig(steps=4), generator=_gen(5))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit_step, b.commit_step)
    parts = type(a).cat([a.index([0, 1]), a.index([2, 3])])
    assert torch.equal(parts.samples, a.samples) and torch.equal(parts.log_probs["p1"], a.log_probs["p1"])


def test_bad_sampler_config_names_the_field():
    with pytest.raises(ValueError, match="temperature"):
        SamplerConfig(temperature="hot")
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=0)


def test_plain_sampler_draws_the_same_tokens_without_recording():
    policy = ToyPolicy(codebook_size=6, grid=(3, 4))
    a = sample(policy, PROMPTS, SamplerConfig(steps=5), generator=_gen(7))
    b = sample(policy, PROMPTS, SamplerConfig(steps=5), generator=_gen(7), record=False)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit_step, b.commit_step)
    assert b.samples.shape[1] == 0 and b.log_probs == {}
