"""The shapes-world masked base (mask_grpo.md §10): patch codec, omni-attention transformer, policy protocol,
persistence and the committed checkpoint. No network, no hub ids; each test takes seconds on one thread."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mask_grpo.backends.shapes import (
    CODEBOOK_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    ShapesMaskedPolicy,
    omni_attention_mask,
    shapes_vocabulary,
    tiny_shapes_policy,
)
from mask_grpo.backends.shapes_tokenizer import PatchCodec, PatchCodecConfig, code_table, patchify
from mask_grpo.policy import MaskedPolicy, guided_logits
from shared.shapes import eval_prompts, geneval_score, render

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[3]
ASSET = REPO / "assets" / "shapes_masked_base"


@pytest.fixture(scope="module")
def codec() -> PatchCodec:
    return PatchCodec.fit(PatchCodecConfig())


@pytest.fixture(scope="module")
def tiny() -> ShapesMaskedPolicy:
    policy = tiny_shapes_policy(seed=0)
    policy.trainable().eval()
    return policy


def _roundtrip_fraction(codec: PatchCodec) -> float:
    records = eval_prompts()
    images = [render(r, size=32, seed=100 + i) for i, r in enumerate(records)]
    decoded = codec.decode(codec.encode_pil(images))
    return geneval_score(decoded, records)["correct_images"]


# ----------------------------------------------------------------------------------------------- codec
def test_codec_roundtrip_keeps_the_verifier_correct(codec):
    assert codec.codebook_size == 1 + 6 * codec.cfg.num_patterns and codec.grid == (8, 8)
    assert _roundtrip_fraction(codec) >= 0.95


def test_decode_of_encode_is_the_nearest_code_by_hand(codec):
    table = code_table(codec.patterns)  # (K, 48)
    k_red_full = 1 + 0 * codec.cfg.num_patterns + int(np.flatnonzero(codec.patterns.reshape(len(codec.patterns), -1).all(1))[0])
    img = torch.ones(1, 3, 32, 32)
    img[0, :, 0:4, 4:8] = torch.tensor([220, 20, 20]).view(3, 1, 1) / 255  # patch (0, 1): a full red patch
    img[0, :, 4:8, 0:4] = torch.tensor([220, 20, 20]).view(3, 1, 1) / 255  # patch (1, 0): red with one white pixel
    img[0, :, 4, 0] = 1.0
    img[0, :, 8:12, 8:12] = 0.5  # patch (2, 2): off-palette grey
    codes = codec.encode(img)
    assert codes[0, 0] == 0 and codes[0, 1] == k_red_full  # white, then the full red code
    patches = patchify(img, 4)[0].numpy()  # (64, 48)
    brute = ((patches[:, None, :] - table[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(codes[0].numpy(), brute)
    assert torch.equal(patchify(codec.decode(codes), 4)[0], torch.from_numpy(table[brute]))
    # the one-pixel-off patch decodes to a red patch at most one pattern pixel away from it
    rec = patchify(codec.decode(codes), 4)[0, 8].numpy()
    assert np.abs(rec - patches[8]).reshape(3, 16).any(0).sum() <= 1


def test_codec_rejects_bad_input(codec):
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        codec.decode(torch.full((1, 64), codec.codebook_size))
    with pytest.raises(ValueError, match="encode expects"):
        codec.encode(torch.ones(1, 3, 16, 16))


# ----------------------------------------------------------------------------------------------- transformer
def test_policy_protocol_shapes_and_dtype(tiny):
    assert isinstance(tiny, MaskedPolicy)
    k = tiny.codebook_size
    assert tiny.mask_id == k and tiny.grid == (8, 8)
    cond = tiny.encode(["a photo of a red circle", ""])
    assert set(cond) == {"text_ids", "text_mask"} and cond["text_ids"].shape[0] == 2
    assert cond["text_mask"][1].sum() == 1  # "" is <bos> only: the unconditional input
    tokens = torch.randint(0, k, (2, 64))
    tokens[:, ::3] = tiny.mask_id
    logits = tiny.logits(tokens, cond)
    assert logits.shape == (2, 64, k) and logits.dtype == torch.float32
    images = tiny.decode(torch.randint(0, k, (2, 64)))
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert isinstance(tiny.trainable(), torch.nn.Module)
    guided = guided_logits(tiny, tokens[:1], tiny.encode(["a photo of a red circle"]), tiny.encode([""]), 3.0)
    assert guided.shape == (1, 64, k)


def test_attention_mask_pattern():
    allow = omni_attention_mask(torch.tensor([[True, True, False]]), 2)[0]
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],  # a pad query still sees the real text before it (never an empty row)
        [1, 1, 0, 1, 1],
        [1, 1, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(allow, expected)


def test_text_is_causal_image_is_full(tiny):
    model = tiny.trainable()
    cond = tiny.encode(["a photo of a red square and a blue circle"])
    ids, mask = cond["text_ids"], cond["text_mask"]
    tokens = torch.randint(0, tiny.codebook_size, (1, 64))
    tokens[0, 10:40] = tiny.mask_id
    length = model.cfg.text_len
    with torch.no_grad():
        h0 = model.hidden(ids, mask, tokens)
        ids2 = ids.clone()
        ids2[0, 6] = shapes_vocabulary().index("triangle")  # perturb a later text token
        h1 = model.hidden(ids2, mask, tokens)
        assert torch.equal(h0[:, :6], h1[:, :6])  # earlier text unchanged
        assert not torch.allclose(h0[:, 6], h1[:, 6])
        assert (h0[:, length:] - h1[:, length:]).abs().amax(-1).min() > 0  # text → every image position
        tokens2 = tokens.clone()
        tokens2[0, 63] = (tokens[0, 63] + 1) % tiny.codebook_size  # perturb the last image token
        h2 = model.hidden(ids, mask, tokens2)
        assert torch.equal(h0[:, :length], h2[:, :length])  # text never sees the image
        assert (h0[:, length:] - h2[:, length:]).abs().amax(-1).min() > 0  # every image position sees it


def test_padding_is_invisible(tiny):
    cond = tiny.encode(["a photo of a circle"])
    tokens = torch.full((1, 64), tiny.mask_id)
    ids = cond["text_ids"].clone()
    ids[~cond["text_mask"]] = shapes_vocabulary().index("red")  # garbage under the pad mask
    with torch.no_grad():
        a = tiny.logits(tokens, cond)
        b = tiny.logits(tokens, {"text_ids": ids, "text_mask": cond["text_mask"]})
    assert torch.equal(a, b)


def test_prompt_handling(tiny):
    ids, _ = tiny.text(["A photo of a RED circle."])
    ids2, _ = tiny.text(["a photo of a red circle"])
    assert torch.equal(ids, ids2)
    ids3, _ = tiny.text(["a photo of a pink circle"])
    assert (ids3 == 1).sum() == 1  # <unk>
    with pytest.raises(ValueError, match="reads at most"):
        tiny.encode(["a photo of " + "red " * 20 + "circle"])


def test_sampler_runs_on_the_tiny_policy(tiny):
    from mask_grpo.sampler import SamplerConfig, sample

    traj = sample(tiny, ["a photo of a red circle", "a photo of two squares"], SamplerConfig(steps=4, cfg_scale=2.0),
                  generator=torch.Generator().manual_seed(0))
    assert traj.tokens.shape == (2, 64) and int(traj.tokens.max()) < tiny.codebook_size
    assert tiny.decode(traj.tokens).shape == (2, 3, 32, 32)


def test_to_moves_and_casts(tiny):
    policy = tiny_shapes_policy(seed=1)
    assert policy.to("cpu") is policy
    policy.to(dtype=torch.float64)
    out = policy.logits(torch.full((1, 64), policy.mask_id), policy.encode([""]))
    assert out.dtype == torch.float32 and policy.device.type == "cpu"


def test_build_is_seeded():
    a, b = tiny_shapes_policy(seed=3), tiny_shapes_policy(seed=3)
    for pa, pb in zip(a.trainable().parameters(), b.trainable().parameters()):
        assert torch.equal(pa, pb)


# ----------------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    loaded = ShapesMaskedPolicy.from_pretrained(tmp_path)
    tokens = torch.randint(0, tiny.codebook_size, (2, 64))
    tokens[:, 5:30] = tiny.mask_id
    prompts = ["a photo of three triangles", ""]
    with torch.no_grad():
        assert torch.equal(tiny.logits(tokens, tiny.encode(prompts)), loaded.logits(tokens, loaded.encode(prompts)))
    assert torch.equal(loaded.decode(tokens.clamp(max=tiny.codebook_size - 1)),
                       tiny.decode(tokens.clamp(max=tiny.codebook_size - 1)))


def test_from_pretrained_names_the_missing_file(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder.*train_shapes_masked_base"):
        ShapesMaskedPolicy.from_pretrained(tmp_path / "nowhere")
    tiny.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=MODEL_FILE):
        ShapesMaskedPolicy.from_pretrained(tmp_path / "m")
    tiny.save_pretrained(tmp_path / "c")
    (tmp_path / "c" / CONFIG_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a shapes masked base"):
        ShapesMaskedPolicy.from_pretrained(tmp_path / "c")


def test_backend_registry_loads_it(tiny, tmp_path):
    from types import SimpleNamespace

    from mask_grpo.backends import load_policy

    tiny.save_pretrained(tmp_path)
    policy = load_policy(SimpleNamespace(backend="shapes", path=str(tmp_path)), "cpu")
    assert isinstance(policy, ShapesMaskedPolicy) and policy.codebook_size == tiny.codebook_size


# ----------------------------------------------------------------------------------------------- committed base
@pytest.mark.skipif(not (ASSET / CONFIG_FILE).is_file(), reason="assets/shapes_masked_base not built yet")
def test_committed_base_loads_and_is_small():
    size = sum(p.stat().st_size for p in ASSET.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    for name in (CONFIG_FILE, MODEL_FILE, CODEBOOK_FILE, "train_log.jsonl", "samples.png", "eval.json"):
        assert (ASSET / name).is_file(), name
    policy = ShapesMaskedPolicy.from_pretrained(ASSET)
    assert isinstance(policy, MaskedPolicy) and policy.mask_id == policy.codebook_size
    assert _roundtrip_fraction(policy.codec) >= 0.95
    with torch.no_grad():
        logits = policy.logits(torch.full((1, 64), policy.mask_id), policy.encode(["a photo of a red circle"]))
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------- pretraining script
def _train_tool():
    spec = importlib.util.spec_from_file_location("train_shapes_masked_base", REPO / "tools" / "train_shapes_masked_base.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_maskgit_masking_fractions():
    tool = _train_tool()
    codes = torch.zeros(4000, 64, dtype=torch.long)
    inputs, masked = tool.mask_tokens(codes, 99, torch.Generator().manual_seed(0))
    assert torch.equal(inputs == 99, masked) and masked.sum(1).min() >= 1
    # E[cos(π r / 2)] = 2/π for r ~ U(0, 1)
    assert abs(masked.float().mean().item() - 2 / np.pi) < 0.02
