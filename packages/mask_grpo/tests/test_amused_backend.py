"""diffusers' aMUSEd behind MaskedPolicy (mask_grpo.md §9): exact equivalence with `AmusedPipeline`, decoding,
loading, replay. Everything runs on the tiny offline pipeline (`tiny_amused_pipeline`), float32, CPU."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types

import pytest
import torch

from mask_grpo.backends.amused import (
    SUBFOLDERS,
    AmusedPolicy,
    _diffusers_amused,
    pipeline_sampler_config,
    tiny_amused_pipeline,
)
from mask_grpo.logprobs import KINDS
from mask_grpo.policy import MaskedPolicy, num_tokens
from mask_grpo.replay import replay_log_probs
from mask_grpo.sampler import SamplerConfig, sample

torch.set_num_threads(1)

PROMPTS = ["a photo of a red circle", "a photo of two yellow circles and a square"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_amused_pipeline(seed=0, grid=8)


@pytest.fixture(scope="module")
def policy(pipe) -> AmusedPolicy:
    return AmusedPolicy.from_pipeline(pipe)


def _pipeline_tokens(pipe, prompts, steps, guidance, seed, **kwargs) -> torch.Tensor:
    out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
               generator=torch.Generator().manual_seed(seed), **kwargs).images
    return out.reshape(len(prompts), -1)


def _capture_transformer_inputs(pipe) -> tuple[list[dict], object]:
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)})

    return calls, pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)


# ---- the protocol ---------------------------------------------------------------------------------------------------
def test_protocol_attributes_and_logits_shape(policy, pipe):
    assert isinstance(policy, MaskedPolicy)
    assert policy.mask_id == 31 == pipe.scheduler.config.mask_token_id
    assert policy.codebook_size == 8 and policy.grid == (8, 8) and num_tokens(policy) == 64
    assert policy.trainable() is pipe.transformer
    cond = policy.encode(PROMPTS)
    tokens = torch.randint(0, 8, (2, 64), generator=torch.Generator().manual_seed(0))
    tokens[:, ::3] = policy.mask_id
    logits = policy.logits(tokens, cond)
    assert logits.shape == (2, 64, 8)
    # the scheduler's view of the transformer's (B, K, h, w) output [scheduling_amused.py, `step`]
    raw = pipe.transformer(tokens.view(2, 8, 8), micro_conds=cond["micro_conds"],
                           pooled_text_emb=cond["pooled_text_emb"], encoder_hidden_states=cond["encoder_hidden_states"])
    assert torch.equal(logits, raw.reshape(2, 8, 64).permute(0, 2, 1))
    # differentiable w.r.t. the trainable transformer only
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in policy.trainable().parameters() if p.requires_grad)
    policy.trainable().zero_grad(set_to_none=True)


def test_encode_matches_pipeline_conditioning_and_empty_negative(policy, pipe):
    """The pipeline's transformer inputs with CFG on are [encode(""), encode(prompts)] and the micro-conds
    (width, height, 0, 0, 6) [pipeline_amused.py]."""
    calls, handle = _capture_transformer_inputs(pipe)
    try:
        _pipeline_tokens(pipe, PROMPTS, steps=2, guidance=10.0, seed=0)
    finally:
        handle.remove()
    first = calls[0]
    cond, uncond = policy.encode(PROMPTS), policy.encode(["", ""])
    for key in ("encoder_hidden_states", "pooled_text_emb", "micro_conds"):
        assert torch.equal(first[key], torch.cat([uncond[key], cond[key]])), key
    assert first["micro_conds"][0].tolist() == [8.0, 8.0, 0.0, 0.0, 6.0]
    assert first["encoder_hidden_states"].shape == (4, 16, 8)  # hidden_states[-2] at max_length 16
    assert not torch.equal(uncond["pooled_text_emb"][0], cond["pooled_text_emb"][0])


# ---- THE key test: token-exact equivalence with AmusedPipeline -------------------------------------------------------
@pytest.mark.parametrize("guidance", [1.0, 10.0], ids=["cfg_off", "cfg_10"])
@pytest.mark.parametrize("steps", [4, 12])
@pytest.mark.parametrize("batch", [1, 2])
def test_sampler_reproduces_pipeline_tokens_exactly(pipe, policy, guidance, steps, batch):
    prompts = PROMPTS[:batch]
    cfg = SamplerConfig(steps=steps, temperature="amused", amused_range=(2.0, 0.0), schedule="cosine",
                        cfg_scale=guidance)
    assert cfg == policy.sampler_config(steps, guidance_scale=guidance)
    for seed in (0, 1):
        ref = _pipeline_tokens(pipe, prompts, steps, guidance, seed)
        traj = sample(policy, prompts, cfg, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(traj.tokens, ref), f"seed {seed}"
        assert (traj.tokens != policy.mask_id).all()
        assert traj.commit_step.unique().numel() == steps  # every iteration commits something: a real trajectory
    other = sample(policy, prompts, cfg, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other.tokens, traj.tokens)


@pytest.mark.parametrize("temperature, schedule", [((2.0, 0.0), "linear"), (3.0, "cosine"), ((1.0, 0.5), "cosine")])
def test_equivalence_other_scheduler_settings(pipe, temperature, schedule):
    """Linear masking schedule (scheduler config) and the pipeline's scalar/pair `temperature` argument."""
    from diffusers import AmusedScheduler

    original = pipe.scheduler
    pipe.scheduler = AmusedScheduler(mask_token_id=31, masking_schedule=schedule)
    try:
        policy = AmusedPolicy.from_pipeline(pipe)
        assert policy.masking_schedule == schedule
        ref = _pipeline_tokens(pipe, PROMPTS, 6, 1.0, seed=4, temperature=temperature)
    finally:
        pipe.scheduler = original
    cfg = policy.sampler_config(6, guidance_scale=1.0, temperature=temperature)
    traj = sample(policy, PROMPTS, cfg, generator=torch.Generator().manual_seed(4))
    assert torch.equal(traj.tokens, ref)


def test_resolution_and_micro_conditioning_options(pipe):
    """height/width set the grid and the micro-conds; crop and aesthetic score enter the micro-conds; each matches the
    pipeline's arguments of the same name and changes the logits."""
    kwargs = dict(height=4, width=6, micro_conditioning_crop_coord=(1, 2), micro_conditioning_aesthetic_score=5)
    policy = AmusedPolicy.from_pipeline(pipe, height=4, width=6, crop_coord=(1, 2), aesthetic_score=5)
    assert policy.grid == (4, 6)
    calls, handle = _capture_transformer_inputs(pipe)
    try:
        ref = _pipeline_tokens(pipe, PROMPTS, 5, 1.0, seed=7, **kwargs)
    finally:
        handle.remove()
    assert calls[0]["micro_conds"][0].tolist() == [6.0, 4.0, 1.0, 2.0, 5.0]
    traj = sample(policy, PROMPTS, policy.sampler_config(5, 1.0), generator=torch.Generator().manual_seed(7))
    assert torch.equal(traj.tokens, ref)
    default = AmusedPolicy.from_pipeline(pipe, height=4, width=6)
    tokens = torch.full((2, 24), policy.mask_id)
    plain = default.logits(tokens, default.encode(PROMPTS))
    assert not torch.equal(plain, policy.logits(tokens, policy.encode(PROMPTS)))
    with pytest.raises(ValueError, match="mask_id"):
        AmusedPolicy(pipe.transformer, pipe.vqvae, pipe.text_encoder, pipe.tokenizer, mask_id=32)


def test_pipeline_sampler_config_maps_guidance():
    assert pipeline_sampler_config(12, guidance_scale=0.5).cfg_scale == 1.0  # the pipeline guides only above 1
    assert pipeline_sampler_config(12, guidance_scale=10.0).cfg_scale == 10.0
    assert pipeline_sampler_config(12, temperature=3).amused_range == 3.0


# ---- decoding -------------------------------------------------------------------------------------------------------
def test_decode_matches_pipeline_images(pipe, policy):
    tokens = _pipeline_tokens(pipe, PROMPTS, 4, 1.0, seed=5)
    images = pipe(PROMPTS, num_inference_steps=4, guidance_scale=1.0, output_type="pt",
                  generator=torch.Generator().manual_seed(5)).images
    ours = policy.decode(tokens)
    assert ours.shape == images.shape == (2, 3, 8, 8)
    assert torch.allclose(ours, images, atol=1e-6, rtol=0)
    assert ours.min() >= 0 and ours.max() <= 1
    with pytest.raises(ValueError, match="mask"):
        policy.decode(torch.full((1, 64), policy.mask_id))


# ---- loading --------------------------------------------------------------------------------------------------------
def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Loading must reproduce every weight bit for bit. The forward is then compared at float32 round-off only:
    safetensors tensors are memory-mapped, and a different alignment can send a matmul down another CPU kernel."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_from_pretrained_round_trip(pipe, policy, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert all((tmp_path / s).is_dir() for s in SUBFOLDERS)
    loaded = AmusedPolicy.from_pretrained(tmp_path, device="cpu")
    assert (loaded.mask_id, loaded.codebook_size, loaded.grid) == (policy.mask_id, policy.codebook_size, policy.grid)
    a, b = policy.encode(PROMPTS + [""]), loaded.encode(PROMPTS + [""])
    assert all(torch.equal(a[k], b[k]) for k in a)
    tokens = torch.randint(0, 8, (3, 64), generator=torch.Generator().manual_seed(1))
    tokens[:, 1::2] = policy.mask_id
    _assert_same_weights(policy.transformer, loaded.transformer)
    assert torch.allclose(policy.logits(tokens, a), loaded.logits(tokens, b), atol=1e-5, rtol=0)
    wide = AmusedPolicy.from_pretrained(tmp_path, dtype=torch.float64)
    assert wide.trainable().dtype == torch.float64
    assert wide.logits(tokens, wide.encode(PROMPTS + [""])).dtype == torch.float64


def test_from_pretrained_variant(pipe, policy, tmp_path):
    pipe.save_pretrained(tmp_path, variant="fp16")  # names the files *.fp16.safetensors (the weights stay float32)
    with pytest.raises(OSError):
        AmusedPolicy.from_pretrained(tmp_path)
    loaded = AmusedPolicy.from_pretrained(tmp_path, variant="fp16")
    tokens = torch.full((1, 64), policy.mask_id)
    a, b = policy.encode(PROMPTS[:1]), loaded.encode(PROMPTS[:1])
    assert all(torch.equal(a[k], b[k]) for k in a)
    _assert_same_weights(policy.transformer, loaded.transformer)
    assert torch.allclose(loaded.logits(tokens, b), policy.logits(tokens, a), atol=1e-5, rtol=0)


def test_from_pretrained_names_missing_subfolder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "vqvae")
    with pytest.raises(FileNotFoundError, match=r"vqvae/.*fix"):
        AmusedPolicy.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AmusedPolicy.from_pretrained(tmp_path / "nowhere")


# ---- lazy import ----------------------------------------------------------------------------------------------------
def test_module_imports_without_amused_and_errors_clearly(monkeypatch):
    """With a diffusers lacking aMUSEd, importing the backend works; using it raises an ImportError with the fix."""
    monkeypatch.setitem(sys.modules, "diffusers", types.ModuleType("diffusers"))
    spec = importlib.util.find_spec("mask_grpo.backends.amused")
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    for call in (fresh._diffusers_amused, fresh.tiny_amused_pipeline):
        with pytest.raises(ImportError, match=r"0\.42.*fix"):
            call()
    monkeypatch.undo()
    assert "UVit2DModel" in _diffusers_amused()


# ---- replay ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("guidance", [1.0, 3.0], ids=["cfg_off", "cfg_3"])
def test_replay_reproduces_rollout_log_probs(policy, guidance):
    """Replaying one iteration at a time (the rollout's batch of B) gives the rollout's log-probs bit for bit; all T
    iterations in one batched forward (B·T states) differ only by float32 rounding of the larger batch (≈1 ulp of
    sums of ≈100 over 64 positions), hence rtol 1e-6 there."""
    cfg = policy.sampler_config(6, guidance_scale=guidance)
    cond = policy.encode(PROMPTS)
    uncond = policy.encode(["", ""]) if guidance > 1 else None
    traj = sample(policy, None, cfg, cond=cond, uncond=uncond, generator=torch.Generator().manual_seed(0))
    for kind in KINDS:
        per_step = torch.cat([replay_log_probs(policy, traj, cond, [t], kind, uncond=uncond, cfg_scale=cfg.cfg_scale)
                              for t in range(traj.steps)], dim=1)
        torch.testing.assert_close(per_step, traj.log_probs[kind], atol=1e-5, rtol=0)
        batched = replay_log_probs(policy, traj, cond, range(traj.steps), kind, uncond=uncond,
                                   cfg_scale=cfg.cfg_scale)
        assert batched.shape == (2, 6) and batched.requires_grad
        torch.testing.assert_close(batched, traj.log_probs[kind], atol=1e-5, rtol=1e-6)
    assert (traj.log_probs["p1"] != traj.log_probs["p2"]).any()
