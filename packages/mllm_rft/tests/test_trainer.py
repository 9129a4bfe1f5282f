"""The trainer: reference model only with β > 0, batch plumbing (row selection, re-padding), objective overrides,
a short run per preset, dynamic sampling, overlong filtering, LoRA, and resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from shared.errors import ConfigError
from shared.training import load_config

from mllm_rft.config import RFTConfig
from mllm_rft.models import add_lora, load_vlm
from mllm_rft.prompts import encode_prompts
from mllm_rft.rollout import generate_with_logprobs, sequence_logprobs
from mllm_rft.tasks import make_split
from mllm_rft.trainer import (
    Chunk,
    QuestionStream,
    _concat,
    build_objective,
    build_reference,
    select_rows,
    train,
)


def _cfg(model_dir, run_dir, *overrides: str) -> RFTConfig:
    base = [f"model.path={model_dir}", f"run.dir={run_dir}", "data.image_size=32", "data.train_size=64",
            "data.test_size=6", "data.ood_size=6", "rollout.group_size=4", "rollout.prompts_per_step=3",
            "rollout.max_new_tokens=6", "rollout.micro_batch_size=8", "train.steps=2", "eval.every=0",
            "eval.examples=2", "run.progress=false", "run.threads=1", "train.lr=1e-3"]
    return load_config(RFTConfig, preset="shapes-count", overrides=base + list(overrides))


# ------------------------------------------------------------------------------------------------ reference model
def test_beta_zero_builds_no_reference_model(tiny_vlm_dir, monkeypatch):
    """Must-show: β = 0 builds no reference model (no deepcopy, no second load)."""
    model, _ = load_vlm(tiny_vlm_dir)
    calls = []
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: calls.append(a) or pytest.fail("deepcopy with β = 0"))
    for name in ("dapo", "dr_grpo", "gspo"):
        cfg = _cfg(tiny_vlm_dir, "unused", f"objective.preset={name}")
        objective = build_objective(cfg)
        assert objective.beta == 0
        assert build_reference(model, objective, lora=False) is None
        assert build_reference(model, objective, lora=True) is None
    assert calls == []


def test_beta_positive_reference_is_a_frozen_copy(tiny_vlm_dir):
    model, _ = load_vlm(tiny_vlm_dir)
    objective = build_objective(_cfg(tiny_vlm_dir, "unused", "objective.preset=grpo"))
    assert objective.beta == 0.04
    ref = build_reference(model, objective, lora=False)
    assert ref is not model and not any(p.requires_grad for p in ref.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values()))
    assert build_reference(model, objective, lora=True) == "adapter"


def test_train_with_beta_zero_never_copies_the_model(tiny_vlm_dir, tmp_path, monkeypatch):
    real = copy.deepcopy

    def guarded(obj, *a, **k):
        assert not isinstance(obj, torch.nn.Module), "a model was copied with β = 0"
        return real(obj, *a, **k)

    monkeypatch.setattr(copy, "deepcopy", guarded)
    train(_cfg(tiny_vlm_dir, tmp_path, "objective.preset=dapo", "train.steps=1", "eval.examples=0"))


def test_objective_overrides_and_dr_grpo_length():
    cfg = load_config(RFTConfig, overrides=["objective.preset=dapo", "objective.clip_high=0.3",
                                            "objective.dual_clip=3", "rollout.max_new_tokens=17"])
    o = build_objective(cfg)
    assert (o.clip_low, o.clip_high, o.dual_clip, o.aggregation) == (0.2, 0.3, 3.0, "token_mean")
    assert build_objective(load_config(RFTConfig, overrides=["objective.preset=dr_grpo",
                                                             "rollout.max_new_tokens=17"])).max_length == 17
    with pytest.raises(ConfigError, match="objective.preset"):
        load_config(RFTConfig, overrides=["objective.preset=ppo"])
    with pytest.raises(ConfigError, match="rollout.group_size"):
        load_config(RFTConfig, overrides=["rollout.group_size=1"])


# --------------------------------------------------------------------------------------------------- batches
@pytest.fixture(scope="module")
def chunks(tiny_vlm_dir):
    model, processor = load_vlm(tiny_vlm_dir)
    out = []
    for seed, task in ((0, "counting"), (1, "spatial")):
        samples = make_split(task, "train", 3, seed=seed, image_size=32)
        inputs = encode_prompts(processor, samples)
        r = generate_with_logprobs(model, inputs, max_new_tokens=5 + seed, seed=seed)
        n = len(samples)
        out.append(Chunk(inputs, r, samples, torch.arange(n) + 10 * seed, torch.zeros(n), torch.arange(n) * 1.0))
    return model, out


def test_select_rows_and_concat_keep_log_probs(chunks):
    """Row selection slices Qwen2-VL's flat pixel_values per image; concatenation re-pads prompts on the left and
    completions on the right; the teacher-forced log-probs of every row are unchanged."""
    model, (a, b) = chunks
    with torch.no_grad():
        lp_a = sequence_logprobs(model, a.rollout, a.inputs)
        lp_b = sequence_logprobs(model, b.rollout, b.inputs)
        sub = select_rows(a, [2, 0])
        assert sub.inputs["pixel_values"].shape[0] == 2 * 16 and sub.samples == [a.samples[2], a.samples[0]]
        torch.testing.assert_close(sequence_logprobs(model, sub.rollout, sub.inputs), lp_a[[2, 0]])
        both = _concat([a, b])
        assert both.rollout.prompt_ids.shape[1] == max(a.rollout.prompt_ids.shape[1], b.rollout.prompt_ids.shape[1])
        lp = sequence_logprobs(model, both.rollout, both.inputs)
    Ta, Tb = lp_a.shape[1], lp_b.shape[1]
    torch.testing.assert_close(lp[:3, :Ta], lp_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(lp[3:, :Tb], lp_b, atol=1e-5, rtol=0)
    assert both.groups.tolist() == [0, 1, 2, 10, 11, 12]


def test_question_stream_resumes_in_place():
    items = list(range(7))
    s = QuestionStream(items, seed=3)
    first = s.take(5)
    state = s.state_dict()
    rest = s.take(6)  # crosses into the second epoch
    t = QuestionStream(items, seed=3)
    t.load_state_dict(state)
    assert t.take(6) == rest and sorted(first + rest[:2]) == items


# ------------------------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("objective", ["grpo", "dapo", "dr_grpo", "gspo"])
def test_short_run_per_preset(tiny_vlm_dir, tmp_path, objective):
    summary = train(_cfg(tiny_vlm_dir, tmp_path, f"objective.preset={objective}"))
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("reward/accuracy", "reward/format", "accuracy", "format_rate", "length/mean", "entropy",
                "zero_std_fraction", "loss/clip_frac_low", "loss/clip_frac_high", "grad_norm"):
        assert key in steps[0], key
    assert ("loss/kl_mean" in steps[0]) == (objective == "grpo")
    splits = {"test", "ood", "test_sampled", "ood_sampled"}  # the preset also reports avg@k
    assert set(summary["before"]) == splits and set(summary["after"]) == splits
    assert set(summary["after"]["test"]["answers"]) <= {"1", "2", "3"}  # per-gold-count breakdown
    for f in ("curves.png", "eval.json", "examples_test_before.png", "examples_ood_after.png",
              "policy/config.json", "policy/model.safetensors"):
        assert (tmp_path / f).is_file(), f
    model, _ = load_vlm(tmp_path / "policy")  # the trained policy loads like any checkpoint


def test_updates_change_the_policy_and_mu_gives_off_policy_ratios(tiny_vlm_dir, tmp_path, monkeypatch):
    # an untrained model answers nothing right: score by text length parity so that groups have unequal rewards
    monkeypatch.setattr("mllm_rft.trainer.verify", lambda sample, text: float(len(text) % 2))
    train(_cfg(tiny_vlm_dir, tmp_path, "objective.preset=dapo", "train.epochs=2", "train.mini_batches=2",
               "train.steps=1", "eval.examples=0"))
    rec = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss/loss" in r][-1]
    # 4 optimiser steps on one rollout: later ones see π_θ ≠ π_old
    assert rec["loss/ratio_max"] > 1.0 + 1e-4 or rec["loss/ratio_min"] < 1.0 - 1e-4
    before, _ = load_vlm(tiny_vlm_dir)
    after, _ = load_vlm(tmp_path / "policy")
    assert any(not torch.equal(p, q) for p, q in zip(before.state_dict().values(), after.state_dict().values()))


def test_dynamic_sampling_and_overlong_filter_run(tiny_vlm_dir, tmp_path):
    train(_cfg(tiny_vlm_dir, tmp_path, "objective.preset=dapo", "rollout.dynamic_sampling=true",
               "rollout.max_rounds=2", "rollout.overlong_filter=true", "train.steps=1", "eval.examples=0",
               "reward.accuracy_weight=0", 'reward.weights={"format": 0, "repetition": 1}'))
    rec = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "reward/mean" in r][-1]
    assert rec["dynamic_sampling/rounds"] >= 1 and "dynamic_sampling/drop_fraction" in rec
    assert rec["dynamic_sampling/kept_groups"] <= 3


def test_lora_with_kl_uses_the_base_model_as_reference(tiny_vlm_dir, tmp_path):
    model, processor = load_vlm(tiny_vlm_dir)
    base_model, _ = load_vlm(tiny_vlm_dir)
    peft_model = add_lora(model, rank=4, alpha=8, targets=["q_proj", "v_proj"])
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and not any("visual" in n for n in trainable)
    with torch.no_grad():  # move the adapter away from zero so the policy differs from the base
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    samples = make_split("counting", "test", 2, seed=0, image_size=32)
    inputs = encode_prompts(processor, samples)
    r = generate_with_logprobs(peft_model, inputs, max_new_tokens=4, seed=0)
    with torch.no_grad(), peft_model.disable_adapter():
        ref = sequence_logprobs(peft_model, r, inputs)
    with torch.no_grad():
        base = sequence_logprobs(base_model, r, inputs)
        pol = sequence_logprobs(peft_model, r, inputs)
    torch.testing.assert_close(ref, base, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(pol, base, atol=1e-3)
    train(_cfg(tiny_vlm_dir, tmp_path, "objective.preset=grpo", "model.lora_rank=4", "train.steps=1",
               "eval.examples=0"))
    assert (tmp_path / "policy" / "model.safetensors").is_file()  # merged adapter saved as a plain model


def test_resume_after_a_kill_continues_with_identical_metrics(tiny_vlm_dir, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("train.steps=3", "run.save_every=1", "eval.examples=0", "objective.preset=dapo")
    train(_cfg(tiny_vlm_dir, full, *extra))
    train(_cfg(tiny_vlm_dir, part, *extra[1:], "train.steps=2"))  # "killed" after step 2's checkpoint
    train(_cfg(tiny_vlm_dir, part, *extra))                       # resumed
    def steps(d):  # the training records (the stopped run also evaluated at its last step, 2)
        return [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "reward/mean" in r]

    a, b = steps(full), steps(part)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for k, v in ra.items():
            if k.startswith("time/"):
                continue
            assert rb[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (ra["step"], k)
    after = [json.loads((d / "eval.json").read_text())["after"] for d in (full, part)]
    assert after[0] == after[1]


def test_grpo_raises_a_learnable_reward(tiny_vlm_dir, tmp_path, monkeypatch):
    """The loop learns: with the reward "fraction of digit characters in the completion" (reachable by an untrained
    model: its vocabulary holds the numbers 0–256), 12 GRPO steps raise the sampled reward several times over, far beyond its step-to-step spread."""
    monkeypatch.setattr("mllm_rft.trainer.verify",
                        lambda sample, text: sum(ch.isdigit() for ch in text) / max(1, len(text)))
    train(_cfg(tiny_vlm_dir, tmp_path, "objective.preset=dapo", "train.steps=12", "train.lr=1e-2",
               "rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.micro_batch_size=32",
               "eval.examples=0", "data.test_size=0", "data.ood_size=0", 'reward.weights={}'))
    acc = [r["accuracy"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
           if "accuracy" in r]
    first, last = sum(acc[:3]) / 3, sum(acc[-3:]) / 3
    assert last > 2.5 * first and last - first > 0.04, acc  # early steps spread by about 0.005
