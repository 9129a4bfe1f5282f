"""GCPO end to end on the shared trainer (needs its selector contract): 2 iterations on a tiny pipeline, CPU.

Adaptive chunks per trajectory with weighted sampling of half of them, so samples differ in the number and sizes
of their units, and the selector must be handed the rollout.
"""

from __future__ import annotations

import importlib
import math

import torch

from shared.rewards import register_reward
from shared.training import load_config, read_metrics

from chunk_grpo.config import GCPOConfig

gcpo_train = importlib.import_module("chunk_grpo.train")  # the module (chunk_grpo.train is the function)


@register_reward("test_chunk_grpo_brightness")
class Brightness:
    """Mean pixel value."""

    name = "test_chunk_grpo_brightness"

    def __call__(self, images, prompts, metadata=None):
        return images.float().mean(dim=(1, 2, 3))


def test_gcpo_trains_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    real = gcpo_train.build_selector

    def recording(cfg):
        selector = real(cfg)

        def call(num_steps, batch, generator=None, *, traj=None):
            units = selector(num_steps, batch, generator, traj=traj)
            calls.append((num_steps, batch, traj, units))
            return units

        return call

    monkeypatch.setattr(gcpo_train, "build_selector", recording)
    run_dir = tmp_path / "run"
    cfg = load_config(GCPOConfig, overrides=[
        f"model.path={tiny_model_dir}", f"run.dir={run_dir}", "reward.names=test_chunk_grpo_brightness",
        "prompts.per_iteration=2", "sample.group_size=4", "sample.num_steps=6", "sample.noise_level=0.9",
        "train.iterations=2", "train.lr=1e-3", "run.eval_every=0", "run.grids=false", "run.progress=false",
        "run.save_every=0", "chunk.chunking=adaptive", "chunk.adaptive_scope=trajectory", "chunk.max_chunk=2",
        "chunk.sampling=weighted", "chunk.timestep_fraction=0.5", "chunk.drop_last=true"])
    last = gcpo_train.train(cfg)

    assert len(calls) == 2
    for num_steps, batch, traj, units in calls:
        assert (num_steps, batch) == (6, 8) and traj is not None and traj.batch_size == 8
        for sample_units in units:  # 5 trained transitions in 3–5 chunks of ≤ 2 → ⌊K/2⌋ = 1 or 2 trained
            steps = [s for u in sample_units for s in u]
            assert len(sample_units) in (1, 2) and all(1 <= len(u) <= 2 for u in sample_units)
            assert steps == sorted(set(steps)) and all(0 <= s <= 4 for s in steps)  # step 5 is never trained
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2] and last["optimizer_steps"] == 1
    assert math.isfinite(last["reward_mean"]) and math.isfinite(records[1]["grad_norm"])
    assert abs(records[0]["ratio_max"] - 1) < 1e-4 and abs(records[0]["ratio_min"] - 1) < 1e-4  # on-policy


def _trained_weights(cfg, pipeline_dir, train_fn):
    """Train ``cfg`` on a freshly loaded copy of the tiny pipeline; return (transformer state, metrics)."""
    from shared.rollout.loading import load_pipeline

    pipe = load_pipeline(pipeline_dir)
    train_fn(cfg, pipeline=pipe)
    return {k: v.clone() for k, v in pipe.transformer.state_dict().items()}, read_metrics(cfg.run.dir)


def _common(model_dir, run_dir):
    return [f"model.path={model_dir}", f"run.dir={run_dir}", "reward.names=test_chunk_grpo_brightness",
            "prompts.per_iteration=2", "sample.group_size=4", "sample.num_steps=4", "sample.noise_level=0.9",
            "train.iterations=2", "train.lr=1e-3", "train.steps_per_rollout=2", "train.clip_low=0.01",
            "run.eval_every=0", "run.grids=false", "run.progress=false", "run.save_every=0"]


def test_chunks_of_one_step_are_step_level_grpo_exactly(tiny_model_dir, tmp_path):
    """K = T: GCPO with chunks [1, 1, 1, 1] trains bit-for-bit like the shared trainer's step-level units (all steps
    in order), including the off-policy second optimiser step where clipping acts."""
    from shared.flow_grpo.config import RunConfig
    from shared.flow_grpo.train import train as flow_train

    gcpo = load_config(GCPOConfig, overrides=_common(tiny_model_dir, tmp_path / "gcpo") + [
        "chunk.sizes=1,1,1,1", "chunk.drop_last=false"])
    step = load_config(RunConfig, overrides=_common(tiny_model_dir, tmp_path / "step") + [
        "train.units=in_order", "train.fraction=1.0"])
    w_gcpo, m_gcpo = _trained_weights(gcpo, tiny_model_dir, gcpo_train.train)
    w_step, m_step = _trained_weights(step, tiny_model_dir, flow_train)
    assert all(torch.equal(w_gcpo[k], w_step[k]) for k in w_step)
    strip = [{k: v for k, v in r.items() if not k.startswith("time")} for r in m_gcpo]
    assert strip == [{k: v for k, v in r.items() if not k.startswith("time")} for r in m_step]
    assert m_gcpo[-1]["ratio_max"] != 1.0  # the second optimiser step is off-policy: the test compares real ratios


def test_one_chunk_is_the_sequence_level_ratio(tiny_model_dir, tmp_path):
    """K = 1: one chunk of all T steps; its loss is shared.losses' sequence-level (GSPO) clipped surrogate of the
    step log-probs, recomputed here from the same rollout."""
    from shared.flow_grpo.objective import slot_loss
    from shared.flow_grpo.train import unit_weights
    from shared.flow_grpo.units import slots
    from shared.losses import clipped_surrogate
    from shared.rollout import SamplerConfig, adapter_for, sample, step_log_prob
    from shared.rollout.loading import load_pipeline

    pipe = load_pipeline(tiny_model_dir)
    adapter = adapter_for(pipe)
    cfg = SamplerConfig(num_steps=4, noise_level=0.9, height=32, width=32)
    traj = sample(adapter, ["a red circle", "two squares"], cfg, group_size=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # move the policy off the sampling weights so ratios differ from 1
        for p in pipe.transformer.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    from chunk_grpo.config import ChunkConfig
    from chunk_grpo.selector import ChunkSelector

    units = ChunkSelector(ChunkConfig(sizes=[4]))(4, traj.batch_size)
    (slot,) = slots(units)
    adv = torch.linspace(-1.5, 1.5, traj.batch_size)
    out = slot_loss(adapter, traj, slot, adv, unit_weights(units, traj.batch_size), cfg, clip_low=0.02)
    new = torch.stack([step_log_prob(adapter, traj, torch.full((traj.batch_size,), t), cfg).log_prob
                       for t in range(4)], dim=1)
    ref = clipped_surrogate(new, traj.log_probs, adv, clip_low=0.02, ratio_level="sequence")
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-7)
    assert ref.metrics["ratio_max"] != 1.0
