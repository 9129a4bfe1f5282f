"""Rollout log-probs on a tiny Qwen2-VL built from a config (no tokenizer, no download; token ids directly)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config

from mllm_rft.rollout import (
    completion_mask_from_eos,
    freeze_vision_tower,
    generate_with_logprobs,
    sequence_logprobs,
    vision_tower,
)

VOCAB = 300
PAD, EOS, VSTART, VEND, IMG, VID = 0, 1, 290, 291, 292, 293
PATCH, MERGE, TPATCH = 14, 2, 2
IMG_PX = 56  # 56 / 14 = 4 patches a side -> grid (1, 4, 4) -> 16 patches -> 4 image tokens after 2x2 merge
GRID = (1, IMG_PX // PATCH, IMG_PX // PATCH)
N_IMG_TOKENS = GRID[0] * GRID[1] * GRID[2] // MERGE**2


def tiny_qwen2vl(seed: int = 0) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(
        vision_config=dict(
            depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2,
            patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TPATCH,
        ),
        text_config=dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
        ),
        image_token_id=IMG, video_token_id=VID, vision_start_token_id=VSTART, vision_end_token_id=VEND,
    )
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    return model


def vl_batch(prompt_lens: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded batch: [pad…] <vision_start> <image_pad>×4 <vision_end> text… ; one image per row."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n_text in prompt_lens:
        text = torch.randint(2, 280, (n_text,), generator=g).tolist()
        rows.append([VSTART] + [IMG] * N_IMG_TOKENS + [VEND] + text)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r)
        attention_mask[i, width - len(r) :] = 1
    mm_token_type_ids = (input_ids == IMG).int()
    n_patches = GRID[0] * GRID[1] * GRID[2]
    # Qwen2VLImageProcessor layout: (Σ patches, C · temporal_patch · patch · patch), grid_thw (num_images, 3)
    pixel_values = torch.randn(len(rows) * n_patches, 3 * TPATCH * PATCH * PATCH, generator=g)
    image_grid_thw = torch.tensor([GRID] * len(rows))
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
        pixel_values=pixel_values, image_grid_thw=image_grid_thw,
    )


@pytest.fixture(scope="module")
def model() -> Qwen2VLForConditionalGeneration:
    return tiny_qwen2vl()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return vl_batch([3, 6, 9])


def test_generation_logprobs_equal_fresh_forward(model, batch):
    """Must-show: log-probs recorded at generation equal one teacher-forced forward pass (left padding, τ = 0.7)."""
    r = generate_with_logprobs(model, batch, max_new_tokens=8, temperature=0.7, do_sample=True, seed=0)
    assert r.prompt_mask[:, 0].tolist() == [0, 0, 1]  # different lengths, left-padded
    assert r.logprobs.dtype == torch.float32 and r.logprobs.shape == r.completion_ids.shape
    with torch.no_grad():
        fresh = sequence_logprobs(model, r, batch)
    m = r.completion_mask.bool()
    assert m.sum() > 3
    torch.testing.assert_close(fresh[m], r.logprobs[m], atol=1e-5, rtol=0)
    assert (r.logprobs[~m] == 0).all() and (fresh[~m] == 0).all()
    # the temperature matters: at τ = 1 the same tokens get different log-probs
    r1 = type(r)(**{**r.__dict__, "temperature": 1.0})
    with torch.no_grad():
        assert not torch.allclose(sequence_logprobs(model, r1, batch)[m], r.logprobs[m], atol=1e-3)


def test_sequence_logprobs_has_gradient(model, batch):
    r = generate_with_logprobs(model, batch, max_new_tokens=4, temperature=0.7, seed=1)
    lp = sequence_logprobs(model, r, batch)
    lp.sum().backward()
    head = model.lm_head.weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_greedy_returns_argmax_and_nonpositive_logprobs(model, batch):
    r = generate_with_logprobs(model, batch, max_new_tokens=6, do_sample=False)
    assert r.temperature == 1.0
    assert (r.logprobs <= 0).all()
    full = torch.cat([r.prompt_ids, r.completion_ids], 1)
    mm = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(r.completion_ids, dtype=torch.int)], 1)
    with torch.no_grad():
        logits = model(
            input_ids=full, attention_mask=torch.cat([r.prompt_mask, r.completion_mask], 1), mm_token_type_ids=mm,
            pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"], use_cache=False,
        ).logits
    P, T = r.prompt_ids.shape[1], r.completion_ids.shape[1]
    argmax = logits[:, P - 1 : P - 1 + T].argmax(-1)
    m = r.completion_mask.bool()
    assert torch.equal(argmax[m], r.completion_ids[m])
    # the argmax token has the largest log-prob, so log-prob ≥ log(1/V)
    assert (r.logprobs[m] >= -torch.log(torch.tensor(float(VOCAB)))).all()


def test_completion_mask_stops_after_first_eos(model, batch):
    greedy = generate_with_logprobs(model, batch, max_new_tokens=6, do_sample=False)
    # choose as EOS the token row 0 emits at step 1 under greedy decoding -> row 0 stops there
    eos = int(greedy.completion_ids[0, 1])
    pad = 299 if eos != 299 else 298
    r = generate_with_logprobs(model, batch, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    first = (r.completion_ids[0] == eos).nonzero()[0].item()
    assert first <= 1
    assert r.completion_mask[0, : first + 1].tolist() == [1] * (first + 1)
    assert r.completion_mask[0, first + 1 :].sum() == 0
    assert (r.completion_ids[0, first + 1 :] == pad).all()
    assert (r.logprobs[0, first + 1 :] == 0).all()
    assert r.lengths[0] == first + 1


def test_completion_mask_from_eos_hand_values():
    ids = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [1, 2, 3, 4]])
    assert completion_mask_from_eos(ids, (1,)).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert completion_mask_from_eos(ids, (7, 3)).tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]]


def test_seed_determinism(model, batch):
    state = torch.random.get_rng_state()
    a = generate_with_logprobs(model, batch, max_new_tokens=8, temperature=1.5, seed=123)
    b = generate_with_logprobs(model, batch, max_new_tokens=8, temperature=1.5, seed=123)
    c = generate_with_logprobs(model, batch, max_new_tokens=8, temperature=1.5, seed=124)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched


def test_freeze_vision_tower_freezes_exactly_vision_params():
    model = tiny_qwen2vl()
    tower = freeze_vision_tower(model)
    assert tower is model.model.visual
    vision_ids = {id(p) for p in model.model.visual.parameters()}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) not in vision_ids), name
    assert len(vision_ids) > 0 and any(p.requires_grad for p in model.parameters())


def test_freeze_vision_tower_errors_without_vision():
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    with pytest.raises(AttributeError, match="no vision tower"):
        freeze_vision_tower(Qwen2ForCausalLM(cfg))
    with pytest.raises(AttributeError):
        vision_tower(torch.nn.Linear(2, 2))


def test_text_only_model_left_padding_matches():
    """The same guarantee for a text-only causal LM (positions from cumsum(mask) - 1)."""
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, eos_token_id=EOS, pad_token_id=PAD)
    lm = Qwen2ForCausalLM(cfg).eval()
    ids = torch.tensor([[PAD, PAD, 5, 6, 7], [8, 9, 10, 11, 12]])
    inputs = dict(input_ids=ids, attention_mask=(ids != PAD).long())
    r = generate_with_logprobs(lm, inputs, max_new_tokens=6, temperature=0.7, seed=0, pad_token_id=PAD)
    with torch.no_grad():
        fresh = sequence_logprobs(lm, r, inputs)
    m = r.completion_mask.bool()
    torch.testing.assert_close(fresh[m], r.logprobs[m], atol=1e-5, rtol=0)


def test_validation_errors(model, batch):
    right = dict(batch)
    right["attention_mask"] = batch["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="left-padded"):
        generate_with_logprobs(model, right, max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        generate_with_logprobs(model, batch, max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_with_logprobs(model, batch, max_new_tokens=0)


def test_media_tokens_are_never_sampled(model, batch):
    """A completion holding an image placeholder would break the next forward pass; they are suppressed."""
    from mllm_rft.rollout import media_token_ids

    assert media_token_ids(model) == sorted([IMG, VID, VSTART, VEND])
    saved = model.lm_head.weight[IMG].detach().clone()
    with torch.no_grad():  # make the image token the most likely next token everywhere
        model.lm_head.weight[IMG] += 50.0 * model.lm_head.weight.norm(dim=1).max()
    try:
        r = generate_with_logprobs(model, batch, max_new_tokens=6, temperature=1.0, seed=0)
        assert not torch.isin(r.completion_ids, torch.tensor([IMG, VID, VSTART, VEND])).any()
        raw = generate_with_logprobs(model, batch, max_new_tokens=2, temperature=1.0, seed=0,
                                     suppress_media_tokens=False)
        assert (raw.completion_ids == IMG).any()
    finally:
        with torch.no_grad():
            model.lm_head.weight[IMG] = saved
