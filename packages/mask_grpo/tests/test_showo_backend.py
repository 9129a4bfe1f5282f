"""Show-o backend: vocabulary layout, prompt, omni-attention, logits, MAGVIT-v2 LFQ, save/load (card §2, §7).

Tiny configs and the offline tokenizer of `shared.tiny`; no hub ids, no network. The layout facts pinned here were
read from `showlab/Show-o` (see the docstrings of `mask_grpo.backends.showo` and `mask_grpo.backends.magvitv2`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mask_grpo.backends.magvitv2 import (
    LookupFreeQuantizer,
    MagvitV2,
    MagvitV2Config,
    bits_to_codes,
    codes_to_bits,
    load_magvitv2,
)
from mask_grpo.backends.showo import (
    SPECIAL_TOKENS,
    ShowoConfig,
    ShowoLayout,
    ShowoPolicy,
    additive_mask,
    from_pretrained,
    omni_attention_mask,
    tiny_showo_policy,
)
from mask_grpo.policy import MaskedPolicy, guided_logits

torch.set_num_threads(1)

PROMPTS = ["a photo of a red circle", "", "a photo of two yellow circles"]


@pytest.fixture(scope="module")
def policy() -> ShowoPolicy:
    return tiny_showo_policy()


def _tokens(policy: ShowoPolicy, b: int, seed: int = 0, mask_every: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, policy.codebook_size, (b, policy.config.num_vq_tokens), generator=g)
    t[:, ::mask_every] = policy.mask_id
    return t


# ---------------------------------------------------------------- vocabulary layout


def test_layout_of_the_released_512_model():
    """58498 = 50295 text + 10 special + 8192 codes + 1 mask; [PAD] first, then <|soi|> <|eoi|> … (prompting_utils.py)."""
    lay = ShowoLayout.from_vocab(58498, 50295, 8192)
    assert lay.num_new_special_tokens == 10
    assert lay.image_offset == 50305
    assert lay.mask_token_id == 58497 == lay.vocab_size - 1
    assert (lay.pad_id, lay.soi_id, lay.eoi_id, lay.t2i_id) == (50295, 50296, 50297, 50300)
    assert lay.special_id("<|lvg|>") == 50304 == lay.image_offset - 1
    assert SPECIAL_TOKENS[0] == "[PAD]" and len(SPECIAL_TOKENS) == 10


def test_layout_rejects_inconsistent_vocab():
    with pytest.raises(ValueError, match="10 special"):
        ShowoLayout.from_vocab(58497, 50295, 8192)
    with pytest.raises(ValueError, match="square"):
        ShowoConfig(vocab_size=58498, llm_vocab_size=50295, num_vq_tokens=1000)


def test_policy_attributes_and_protocol(policy):
    assert isinstance(policy, MaskedPolicy)
    assert policy.mask_id == policy.codebook_size == 16
    assert policy.grid == (4, 4)
    assert policy.layout.llm_vocab_size == len(policy.tokenizer)
    assert policy.trainable() is policy.transformer.showo
    assert type(policy.trainable()).__name__ == "PhiForCausalLM"
    assert policy.trainable().config.qk_layernorm  # models/phi.py forces it on


# ---------------------------------------------------------------- prompt


def test_prompt_layout_and_unconditional(policy):
    lay, tok = policy.layout, policy.tokenizer
    t = policy.text_len
    cond = policy.encode(PROMPTS)
    assert cond["text_ids"].shape == (3, t) and cond["text_ids"].dtype == torch.long
    words = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    expect = [lay.t2i_id, tok.bos_token_id, *words, tok.eos_token_id]
    assert cond["text_ids"][0].tolist() == [lay.pad_id] * (t - len(expect)) + expect
    uncond = [lay.pad_id] * (t - 3) + [lay.t2i_id, tok.bos_token_id, tok.eos_token_id]
    assert cond["text_ids"][1].tolist() == uncond


def test_long_prompt_is_truncated_with_eos(policy):
    tok = policy.tokenizer
    long = " ".join(["a photo of a red circle"] * 10)
    ids = policy.encode([long])["text_ids"][0].tolist()
    words = tok(long, add_special_tokens=False)["input_ids"]
    t = policy.text_len
    assert ids == ([policy.layout.t2i_id, tok.bos_token_id, *words])[: t - 1] + [tok.eos_token_id]


def test_input_ids_map_codes_and_mask(policy):
    lay = policy.layout
    tokens = torch.tensor([[0, 5, policy.mask_id, 15] * 4])
    ids = policy.input_ids(tokens, policy.encode(["dog"]))
    t = policy.text_len
    assert ids.shape == (1, t + 16 + 2)
    assert ids[0, t].item() == lay.soi_id and ids[0, -1].item() == lay.eoi_id
    assert ids[0, t + 1 : t + 5].tolist() == [lay.image_offset, lay.image_offset + 5, lay.mask_token_id, lay.image_offset + 15]
    with pytest.raises(ValueError, match="mask_id"):
        policy.input_ids(torch.full((1, 16), policy.mask_id + 1), policy.encode(["dog"]))
    with pytest.raises(ValueError, match="positions"):
        policy.input_ids(torch.zeros(1, 9, dtype=torch.long), policy.encode(["dog"]))


# ---------------------------------------------------------------- omni-attention


def test_omni_mask_on_a_hand_built_sequence():
    """P P t2i a b soi x y eoi (P = pad 0, soi 8, eoi 9): text causal & pad-blind, image rows see all non-pads."""
    ids = torch.tensor([[0, 0, 5, 1, 2, 8, 3, 4, 9]])
    got = omni_attention_mask(ids, pad_id=0, soi_id=8, eoi_id=9)[0].int().tolist()
    expect = [
        [1, 0, 0, 0, 0, 0, 0, 0, 0],  # pad: causal over earlier pads
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0, 0, 0],  # t2i: itself only
        [0, 0, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 1, 1],  # soi … eoi: everything but pads
        [0, 0, 1, 1, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1, 1, 1],
    ]
    assert got == expect
    add = additive_mask(omni_attention_mask(ids, 0, 8, 9), torch.float32)
    assert add.shape == (1, 1, 9, 9) and add[0, 0, 2, 2] == 0 and add[0, 0, 2, 3] == torch.finfo(torch.float32).min


def _hidden(policy: ShowoPolicy, ids: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(ids.shape[1])[None]
    return policy.trainable().model(input_ids=ids, attention_mask=policy.attention_mask(ids), position_ids=pos).last_hidden_state


@torch.no_grad()
def test_later_text_does_not_change_earlier_positions(policy):
    tokens = _tokens(policy, 1)
    ids = policy.input_ids(tokens, policy.encode(["a photo of a red circle"]))
    j = policy.text_len - 3  # a text token near the end of the text block
    other = ids.clone()
    other[0, j] = (ids[0, j] + 1) % len(policy.tokenizer)
    a, b = _hidden(policy, ids), _hidden(policy, other)
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=0)
    assert (a[:, policy.text_len + 1 :] - b[:, policy.text_len + 1 :]).abs().max() > 1e-4  # image rows see the text


@torch.no_grad()
def test_image_positions_attend_to_later_image_tokens_but_text_does_not(policy):
    cond = policy.encode(["dog"])
    tokens = _tokens(policy, 1, mask_every=4)
    other = tokens.clone()
    other[0, -1] = (tokens[0, -1] + 1) % policy.codebook_size
    a, b = policy.logits(tokens, cond), policy.logits(other, cond)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4  # first image position sees the last one (bidirectional)
    t = policy.text_len
    ha, hb = _hidden(policy, policy.input_ids(tokens, cond)), _hidden(policy, policy.input_ids(other, cond))
    torch.testing.assert_close(ha[:, :t], hb[:, :t], rtol=0, atol=0)  # text never sees the image


@torch.no_grad()
def test_padding_is_invisible(policy):
    """Left padding only shifts absolute positions; RoPE is relative, pads are masked: same logits for any T."""
    longer = ShowoPolicy(policy.transformer, policy.vq, policy.tokenizer,
                         dataclasses.replace(policy.config, max_text_len=policy.config.max_text_len + 7))
    tokens = _tokens(policy, 3)
    a = policy.logits(tokens, policy.encode(PROMPTS))
    b = longer.logits(tokens, longer.encode(PROMPTS))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- logits


def _reference_mask(ids: torch.Tensor, pad: int, soi: int, eoi: int) -> torch.Tensor:
    """Row-by-row statement of Show-o's rule (left padding), written independently of `omni_attention_mask`."""
    b, n = ids.shape
    out = torch.zeros(b, n, n, dtype=torch.bool)
    for r in range(b):
        row = ids[r].tolist()
        s, e = row.index(soi), row.index(eoi)
        for i in range(n):
            for j in range(n):
                if row[i] == pad:
                    out[r, i, j] = j <= i
                elif s <= i <= e:
                    out[r, i, j] = row[j] != pad
                else:
                    out[r, i, j] = j <= i and row[j] != pad
    return out


@torch.no_grad()
def test_logits_equal_sliced_full_phi_logits(policy):
    """(B, N, K) = full PhiForCausalLM logits at the image positions, restricted to the image-code columns."""
    cond = policy.encode(PROMPTS)
    tokens = _tokens(policy, 3)
    got = policy.logits(tokens, cond)
    n, k, t, lay = tokens.shape[1], policy.codebook_size, policy.text_len, policy.layout
    assert got.shape == (3, n, k) and got.dtype == torch.float32
    image_ids = torch.where(tokens == policy.mask_id, torch.full_like(tokens, lay.mask_token_id), tokens + lay.image_offset)
    b = tokens.shape[0]
    ids = torch.cat([cond["text_ids"], torch.full((b, 1), lay.soi_id), image_ids, torch.full((b, 1), lay.eoi_id)], 1)
    allowed = _reference_mask(ids, lay.pad_id, lay.soi_id, lay.eoi_id)
    assert torch.equal(allowed, omni_attention_mask(ids, lay.pad_id, lay.soi_id, lay.eoi_id))
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
    full = policy.trainable()(input_ids=ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1])[None]).logits
    assert full.shape[-1] == lay.vocab_size
    torch.testing.assert_close(got, full[:, t + 1 : t + 1 + n, lay.image_offset : lay.image_offset + k])


def test_logits_backpropagate_into_phi_only(policy):
    policy.trainable().zero_grad(set_to_none=True)
    policy.logits(_tokens(policy, 2), policy.encode(PROMPTS[:2])).logsumexp(-1).sum().backward()
    assert policy.trainable().model.layers[0].self_attn.q_proj.weight.grad is not None
    assert policy.trainable().lm_head.weight.grad[policy.layout.image_offset].abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in policy.vq.parameters())
    policy.trainable().zero_grad(set_to_none=True)


@torch.no_grad()
def test_guided_logits_with_the_empty_prompt(policy):
    tokens = _tokens(policy, 2)
    cond, uncond = policy.encode(PROMPTS[:2]), policy.encode(["", ""])
    l_c, l_u = policy.logits(tokens, cond), policy.logits(tokens, uncond)
    torch.testing.assert_close(guided_logits(policy, tokens, cond, uncond, 3.0), l_u + 3.0 * (l_c - l_u), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- MAGVIT-v2 / LFQ


def test_lfq_codes_bits_round_trip_on_hand_values():
    bits = codes_to_bits(torch.tensor([0, 1, 5, 7]), 3)
    assert bits.tolist() == [[-1, -1, -1], [-1, -1, 1], [1, -1, 1], [1, 1, 1]]
    assert bits_to_codes(bits).tolist() == [0, 1, 5, 7]
    b13 = codes_to_bits(torch.tensor([4096, 1, 8191]), 13)  # 13 bits → 8192 codes, most significant bit first
    assert b13[0].tolist() == [1.0] + [-1.0] * 12 and b13[1].tolist() == [-1.0] * 12 + [1.0]
    assert (b13[2] == 1).all()
    all_codes = torch.arange(8192)
    assert torch.equal(bits_to_codes(codes_to_bits(all_codes, 13)), all_codes)


def test_lfq_quantizer_buffers_and_grid_layout():
    q = LookupFreeQuantizer(3)
    assert q.codebook_size == 8 and q.power_vals.tolist() == [4, 2, 1]
    assert torch.equal(q.embedding, codes_to_bits(torch.arange(8), 3))
    codes = torch.tensor([[5, 0, 7, 2]])  # a 2×2 grid, row-major
    z = q.codes_to_latents(codes, (2, 2))
    assert z.shape == (1, 3, 2, 2) and z[0, :, 0, 0].tolist() == [1, -1, 1] and z[0, :, 1, 1].tolist() == [-1, 1, -1]
    assert torch.equal(q.latents_to_codes(z * torch.rand_like(z).add(0.1)), codes)  # signs decide, not magnitudes
    assert q.latents_to_codes(torch.tensor([0.3, -2.0, 0.1]).view(1, 3, 1, 1)).tolist() == [[5]]


@torch.no_grad()
def test_decode_shape_range_and_encode(policy):
    tokens = _tokens(policy, 2, mask_every=10_000)
    tokens = tokens.clamp(max=policy.codebook_size - 1)
    images = policy.decode(tokens)
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    raw = policy.vq.decode_codes(tokens)
    torch.testing.assert_close(images, ((raw + 1) / 2).clamp(0, 1))
    codes = policy.encode_images(images)
    assert codes.shape == (2, 16) and codes.min() >= 0 and codes.max() < policy.codebook_size
    with pytest.raises(ValueError, match="mask"):
        policy.decode(torch.full((1, 16), policy.mask_id))


def test_released_magvit_parameter_names():
    """Names of Show-o's models/modeling_magvitv2.py: encoder.quant_conv, decoder.post_quant_conv, quantize buffers."""
    vq = MagvitV2(MagvitV2Config(ch=32, encoder_ch_mult=(1, 2), encoder_num_res_blocks=(1, 1), decoder_ch_mult=(1, 2),
                                 decoder_num_res_blocks=(1, 1), attn_resolutions=(4,), resolution=8, z_channels=3))
    keys = set(vq.state_dict())
    for k in ("encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
              "encoder.down.1.block.0.nin_shortcut.weight", "encoder.down.1.attn.0.q.weight", "encoder.mid.attn_1.proj_out.weight",
              "encoder.quant_conv.weight", "decoder.post_quant_conv.weight", "decoder.up.1.block.0.conv2.weight",
              "decoder.up.1.upsample.conv.weight", "decoder.up.0.block.0.nin_shortcut.weight", "decoder.mid.block_2.norm2.bias",
              "decoder.norm_out.weight", "decoder.conv_out.weight", "quantize.embedding", "quantize.power_vals"):
        assert k in keys, k
    assert not any("temb_proj" in k or "upsample" in k and k.startswith("decoder.up.0") for k in keys)
    out = vq.decode_codes(torch.randint(0, 8, (1, 4)))
    assert out.shape == (1, 3, 4, 4)


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("weights_name", ["pytorch_model.safetensors", "pytorch_model.bin"])
@torch.no_grad()
def test_save_then_from_pretrained_round_trip(policy, tmp_path: Path, weights_name):
    showo_dir, vq_dir, llm_dir = tmp_path / "showo", tmp_path / "vq", tmp_path / "phi"
    policy.save_pretrained(showo_dir, vq_dir, llm_dir, weights_name=weights_name)
    assert (showo_dir / "config.json").is_file() and (showo_dir / weights_name).is_file()
    loaded = from_pretrained(showo_dir, vq_dir, tokenizer_dir=llm_dir, max_text_len=policy.config.max_text_len)
    assert loaded.config == policy.config
    tokens = _tokens(policy, 3)
    torch.testing.assert_close(loaded.logits(tokens, loaded.encode(PROMPTS)), policy.logits(tokens, policy.encode(PROMPTS)), rtol=0, atol=0)
    full = tokens.clamp(max=policy.codebook_size - 1)
    torch.testing.assert_close(loaded.decode(full), policy.decode(full), rtol=0, atol=0)
    assert torch.equal(loaded.encode(PROMPTS)["text_ids"], policy.encode(PROMPTS)["text_ids"])


def test_saved_state_dict_uses_released_key_names(policy, tmp_path: Path):
    from safetensors.torch import load_file

    policy.save_pretrained(tmp_path / "s", tmp_path / "v")
    keys = set(load_file(str(tmp_path / "s" / "pytorch_model.safetensors")))
    assert all(k.startswith("showo.") for k in keys)
    for k in ("showo.model.embed_tokens.weight", "showo.model.layers.0.self_attn.dense.weight",
              "showo.model.layers.0.self_attn.q_layernorm.weight", "showo.model.layers.1.mlp.fc2.bias",
              "showo.model.final_layernorm.weight", "showo.lm_head.bias"):
        assert k in keys, k


def test_bad_directories_name_the_missing_file(policy, tmp_path: Path):
    showo_dir, vq_dir, llm_dir = tmp_path / "showo", tmp_path / "vq", tmp_path / "phi"
    with pytest.raises(FileNotFoundError, match="show-o-512x512"):
        from_pretrained(tmp_path / "nowhere", vq_dir)
    showo_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(showo_dir, vq_dir)
    policy.save_pretrained(showo_dir, vq_dir, llm_dir)
    (showo_dir / "pytorch_model.safetensors").rename(tmp_path / "moved.safetensors")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin"):
        from_pretrained(showo_dir, vq_dir, tokenizer_dir=llm_dir)
    (tmp_path / "moved.safetensors").rename(showo_dir / "pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        from_pretrained(showo_dir, vq_dir, tokenizer_dir=tmp_path / "empty", llm_config=llm_dir)
    (vq_dir / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="magvitv2"):
        load_magvitv2(vq_dir)


def test_phi_config_mismatch_is_reported(policy, tmp_path: Path):
    """Without a Phi config beside the tokenizer the defaults (Phi-1.5 sizes) are checked against the weights."""
    showo_dir, vq_dir, llm_dir = tmp_path / "showo", tmp_path / "vq", tmp_path / "phi"
    policy.save_pretrained(showo_dir, vq_dir, llm_dir)
    (llm_dir / "config.json").unlink()
    with pytest.raises(ValueError, match="hidden_size: config 2048 vs weights 32"):
        from_pretrained(showo_dir, vq_dir, tokenizer_dir=llm_dir)


def test_num_vq_tokens_override_and_config_checks(policy, tmp_path: Path):
    import json

    showo_dir, vq_dir, llm_dir = tmp_path / "showo", tmp_path / "vq", tmp_path / "phi"
    policy.save_pretrained(showo_dir, vq_dir, llm_dir)
    loaded = from_pretrained(showo_dir, vq_dir, tokenizer_dir=llm_dir, num_vq_tokens=64)
    assert loaded.grid == (8, 8) and loaded.decode(torch.zeros(1, 64, dtype=torch.long)).shape == (1, 3, 16, 16)
    cfg = json.loads((showo_dir / "config.json").read_text())
    (showo_dir / "config.json").write_text(json.dumps({**cfg, "mask_token_id": 3}))
    with pytest.raises(ValueError, match="mask_token_id"):
        from_pretrained(showo_dir, vq_dir, tokenizer_dir=llm_dir)
