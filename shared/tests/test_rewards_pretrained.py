"""Rewards from local pretrained weights: PickScore and CLIPScore on a tiny CLIP built offline; HPSv2 errors.

No hub id anywhere: the CLIP model comes from a small CLIPConfig, the tokenizer is trained in the test
(`shared.tiny.tiny_tokenizer`: BPE with <unk>, </s> appended), both saved with save_pretrained to tmp_path and
loaded through our loaders.
"""

import sys

import pytest
import torch

from shared.rewards import ClipScoreReward, HPSv2Reward, PickScoreReward, build_reward, tensor_to_pil
from shared.tiny import tiny_tokenizer

CORPUS = ["a photo of a red square", "a photo of three circles", "a blue circle left of a triangle"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = tiny_tokenizer(CORPUS, vocab_size=200, model_max_length=16)
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    path = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def _manual(path, images, prompts):
    """logit_scale.exp() · cos(image, text) via CLIPModel's own forward (logits_per_image)."""
    from transformers import CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    model = CLIPModel.from_pretrained(path).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    proc = CLIPImageProcessor.from_pretrained(path)
    inputs = tok(prompts, padding=True, return_tensors="pt")
    pix = proc(images=tensor_to_pil(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=pix)
    return out.logits_per_image.diag(), model.logit_scale.exp().item()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 32, 32, generator=g), [
        "a photo of a red square",
        "a photo of three circles",
        "a blue circle",
    ]


def test_pickscore_equals_manual_computation(clip_dir, batch):
    images, prompts = batch
    reward = build_reward("pickscore", model_dir=clip_dir)
    assert isinstance(reward, PickScoreReward) and reward.model is None  # lazy: nothing loaded yet
    scores = reward(images, prompts)
    expected, scale = _manual(clip_dir, images, prompts)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert torch.allclose(scores, expected, atol=1e-5)
    assert not torch.allclose(scores, scores[[1, 2, 0]])  # depends on the pairing
    normed = PickScoreReward(clip_dir, normalize=True, batch_size=2)(images, prompts)  # Flow-GRPO's / 26
    assert torch.allclose(normed, expected / 26, atol=1e-6)


def test_clip_score_equals_manual_computation(clip_dir, batch):
    images, prompts = batch
    logits, scale = _manual(clip_dir, images, prompts)
    cos = logits / scale
    got = ClipScoreReward(clip_dir)(images, prompts)
    assert torch.allclose(got, 2.5 * cos.clamp(min=0), atol=1e-6)
    assert torch.allclose(ClipScoreReward(clip_dir, w=1.0)(images, prompts), cos.clamp(min=0), atol=1e-6)


def test_separate_processor_dir(clip_dir, batch, tmp_path):
    import shutil

    model_only = tmp_path / "model"
    model_only.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(clip_dir / f, model_only / f)
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        PickScoreReward(model_only)
    images, prompts = batch
    split = PickScoreReward(model_only, processor_dir=clip_dir)(images, prompts)
    assert torch.allclose(split, PickScoreReward(clip_dir)(images, prompts))


def test_missing_weights_dir_names_path_and_contents(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as e:
        PickScoreReward(missing)
    assert str(missing) in str(e.value) and "config.json" in str(e.value) and "save_pretrained" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks config.json, model.safetensors"):
        ClipScoreReward(tmp_path / "empty")


def test_hpsv2_missing_checkpoint_and_missing_open_clip(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="HPS_v2"):
        HPSv2Reward(tmp_path / "HPS_v2.1_compressed.pt")
    ckpt = tmp_path / "HPS_v2.1_compressed.pt"
    ckpt.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if not installed
    with pytest.raises(ImportError, match="open-clip-torch"):
        build_reward("hpsv2", checkpoint=ckpt)
