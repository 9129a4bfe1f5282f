"""Encoders behind the protocol (card §2, §6, §7): every kind from a tiny config saved to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vqrae.encoders import (
    ENCODER_KINDS,
    Encoder,
    EncoderSpec,
    TinyViT,
    TinyViTConfig,
    TinyViTEncoder,
    build_encoder,
)

transformers = pytest.importorskip("transformers")

MEAN = (0.4, 0.5, 0.6)  # deliberately not 0.5 so a wrong normalisation shows
STD = (0.2, 0.3, 0.25)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=4)
TIMM_KW = dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, reg_tokens=2)


def _images(b: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _randomise_last_norm(norm: torch.nn.LayerNorm) -> None:
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0.0, 0.5)


def _save_hf(model, path):
    model.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny models of every kind, saved; last norms randomised so the affine part is non-trivial."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("encoders")
    out = {}

    sig = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION, image_size=16)).eval()
    _randomise_last_norm(sig.post_layernorm)
    out["siglip"] = (_save_hf(sig, root / "siglip"), sig)

    sig2 = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**VISION, num_patches=16)).eval()
    _randomise_last_norm(sig2.post_layernorm)
    out["siglip2"] = (_save_hf(sig2, root / "siglip2"), sig2)

    dino_kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=4)
    dino = transformers.Dinov2Model(transformers.Dinov2Config(**dino_kw)).eval()
    _randomise_last_norm(dino.layernorm)
    out["dinov2"] = (_save_hf(dino, root / "dinov2"), dino)
    reg = transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**dino_kw, num_register_tokens=4)).eval()
    _randomise_last_norm(reg.layernorm)
    out["dinov2_reg"] = (_save_hf(reg, root / "dinov2_reg"), reg)

    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    tm = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TIMM_KW).eval()
    _randomise_last_norm(tm.norm)
    (root / "timm").mkdir()
    save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(root / "timm" / "model.safetensors"))
    (root / "timm" / "config.json").write_text(json.dumps({"model_name": "vit_tiny_patch16_224", "kwargs": TIMM_KW}))
    out["timm"] = (str(root / "timm"), tm)

    tiny = TinyViT(TinyViTConfig(image_size=16, width=32, depth=2, heads=2)).eval()
    _randomise_last_norm(tiny.transformer.norm)
    tiny.save_pretrained(root / "tiny")
    out["tiny_vit"] = (str(root / "tiny"), tiny)
    return out


def _build(kind: str, path: str, **kw) -> Encoder:
    return build_encoder(EncoderSpec(kind=kind.removesuffix("_reg"), path=path, image_size=16, mean=MEAN, std=STD,
                                     **kw))


ALL = ["siglip", "siglip2", "dinov2", "dinov2_reg", "timm", "tiny_vit"]


def test_registry_lists_every_kind():
    assert set(ENCODER_KINDS) == {"tiny_vit", "siglip", "siglip2", "dinov2", "timm", "remote"}


@pytest.mark.parametrize("name", ALL)
def test_shape_grid_width_and_hidden_states(folders, name):
    enc = _build(name, folders[name][0])
    assert isinstance(enc, Encoder) and isinstance(enc, torch.nn.Module)
    assert enc.patch_size == 4 and enc.grid == (4, 4) and enc.image_size == 16
    assert enc.width == 32
    with torch.no_grad():
        z = enc(_images())
        hs = enc.hidden_states(_images())
    assert z.shape == (2, 16, enc.width)
    assert len(hs) == enc.depth and all(h.shape == (2, 16, enc.width) for h in hs)
    with pytest.raises(ValueError, match="expects images"):
        enc(_images(size=20))


@pytest.mark.parametrize("name, prefix", [("siglip", 0), ("dinov2", 1), ("dinov2_reg", 5)])
def test_tokens_are_the_models_patch_tokens_with_our_normalisation(folders, name, prefix):
    path, model = folders[name]
    enc = _build(name, path)
    x = _images()
    with torch.no_grad():
        ours = enc(x)
        ref = model(pixel_values=_norm(x)).last_hidden_state
        wrong = model(pixel_values=(x - 0.5) / 0.5).last_hidden_state
    assert ref.shape[1] == 16 + prefix
    torch.testing.assert_close(ours, ref[:, prefix:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, wrong[:, prefix:], atol=1e-3)  # the mean/std of the spec is used


def test_siglip_loads_vision_tower_of_a_full_siglip_save(tmp_path):
    torch.manual_seed(1)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                max_position_embeddings=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    full = transformers.SiglipModel(transformers.SiglipConfig(vision_config=dict(VISION, image_size=16),
                                                              text_config=text)).eval()
    full.save_pretrained(str(tmp_path))
    enc = _build("siglip", str(tmp_path))
    with torch.no_grad():
        ref = full.vision_model(pixel_values=_norm(_images())).last_hidden_state
        torch.testing.assert_close(enc(_images()), ref, atol=1e-5, rtol=1e-5)


def test_siglip2_matches_naflex_input_built_by_transformers_and_siglip_layout(folders):
    """Our patchify + spatial_shapes equal (a) transformers' own patch conversion and (b) SigLIP's conv patch layout
    with the same weights (which fixes the row-major token order)."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    path, sig2 = folders["siglip2"]
    enc = _build("siglip2", path)
    x = _images(3)
    nx = _norm(x)
    pv = torch.stack([convert_image_to_patches(im, 4) for im in nx])
    with torch.no_grad():
        ours = enc(x)
        ref = sig2(pixel_values=pv, pixel_attention_mask=torch.ones(3, 16, dtype=torch.long),
                   spatial_shapes=torch.tensor([[4, 4]] * 3)).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)

    sig1 = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION, image_size=16)).eval()
    state = dict(sig2.state_dict())
    w = state["embeddings.patch_embedding.weight"]  # (D, p·p·C), patches flattened (p, p, C)
    state["embeddings.patch_embedding.weight"] = w.reshape(32, 4, 4, 3).permute(0, 3, 1, 2)  # conv (D, C, p, p)
    sig1.load_state_dict(state, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(ours, sig1(pixel_values=nx).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_timm_drops_prefix_tokens(folders):
    path, tm = folders["timm"]
    enc = _build("timm", path)
    assert tm.num_prefix_tokens == 3  # CLS + 2 registers
    with torch.no_grad():
        torch.testing.assert_close(enc(_images()), tm.forward_features(_norm(_images()))[:, 3:])


def test_other_resolutions_interpolate_positions(folders):
    for name in ("siglip", "siglip2", "dinov2", "timm"):
        enc = build_encoder(EncoderSpec(kind=name, path=folders[name][0], image_size=24, mean=MEAN, std=STD))
        with torch.no_grad():
            assert enc(_images(size=24)).shape == (2, 36, 32), name
    with pytest.raises(ValueError, match="multiple of the encoder's patch size 4"):
        build_encoder(EncoderSpec(kind="siglip", path=folders["siglip"][0], image_size=18))


@pytest.mark.parametrize("name", ALL)
def test_non_affine_last_norm(folders, name):
    """With the flag the output is the plain normalisation of the last block's tokens; without it the (non-trivial)
    affine part is applied, so the two differ."""
    path, _ = folders[name]
    plain, affine = _build(name, path, non_affine_last_norm=True), _build(name, path)
    x = _images()
    with torch.no_grad():
        z = plain(x)
        last = plain.hidden_states(x)[-1]
        za = affine(x)
    torch.testing.assert_close(z, F.layer_norm(last, (plain.width,), eps=1e-6), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(z, za, atol=1e-3)


def test_non_affine_last_norm_is_a_no_op_for_identity_affine(tmp_path):
    torch.manual_seed(2)
    cfg = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 image_size=16, patch_size=4, num_register_tokens=4)
    transformers.Dinov2WithRegistersModel(cfg).save_pretrained(str(tmp_path))  # fresh LN: weight 1, bias 0
    a, b = _build("dinov2", str(tmp_path)), _build("dinov2", str(tmp_path), non_affine_last_norm=True)
    assert b.model.layernorm.weight is None and a.model.layernorm.weight is not None
    with torch.no_grad():
        torch.testing.assert_close(a(_images()), b(_images()))


def test_tiny_vit_round_trip(tmp_path):
    torch.manual_seed(3)
    model = TinyViT(TinyViTConfig(image_size=16, width=32, depth=2, heads=2, num_classes=5)).eval()
    with torch.no_grad():
        model.head.weight.normal_()
    model.save_pretrained(tmp_path / "m", metadata={"mean": list(MEAN), "std": list(STD)})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    loaded = TinyViT.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    x = _norm(_images())
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), model.forward_features(x))
        assert torch.equal(loaded.logits(x), model.logits(x)) and loaded.logits(x).shape == (2, 5)
    enc = _build("tiny_vit", str(tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(enc(_images()), model.forward_features(x))
    with pytest.warns(UserWarning, match="encoder.mean"):  # metadata says MEAN, spec says 0.5
        build_encoder(EncoderSpec(kind="tiny_vit", path=str(tmp_path / "m"), image_size=16))
    with pytest.raises(ValueError, match="data.image_size=16"):
        build_encoder(EncoderSpec(kind="tiny_vit", path=str(tmp_path / "m"), image_size=32, mean=MEAN, std=STD))


def test_tiny_vit_encoder_wraps_a_model_in_memory():
    model = TinyViT(TinyViTConfig()).eval()
    enc = TinyViTEncoder(model, EncoderSpec(kind="tiny_vit"))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x), model.forward_features(x * 2 - 1))


@pytest.mark.parametrize("kind", ["tiny_vit", "siglip", "siglip2", "dinov2", "timm"])
def test_missing_folder_or_config_names_the_path(tmp_path, kind):
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(FileNotFoundError, match="no_such_encoder"):
        build_encoder(EncoderSpec(kind=kind, path=str(missing)))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty_folder.*config\.json"):
        build_encoder(EncoderSpec(kind=kind, path=str(empty)))


def test_wrong_model_type_and_unknown_kind(folders):
    with pytest.raises(ValueError, match="encoder.kind"):
        build_encoder(EncoderSpec(kind="siglip", path=folders["dinov2"][0], image_size=16))
    with pytest.raises(ValueError, match="encoder.kind='clip'"):
        build_encoder(EncoderSpec(kind="clip", path=folders["dinov2"][0]))


def test_remote_requires_the_flag(folders):
    with pytest.raises(ValueError, match="encoder.trust_remote_code=true"):
        build_encoder(EncoderSpec(kind="remote", path=folders["dinov2"][0], image_size=16))


def test_remote_takes_trailing_patch_tokens(folders, monkeypatch):
    """Wiring of kind=remote with a stand-in for the remote model (no remote code runs): a CLS-first model."""
    path, dino = folders["dinov2"]
    seen = {}

    def fake_from_pretrained(p, **kw):
        seen.update(kw, path=p)
        return dino, {"missing_keys": []}

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_from_pretrained)
    enc = build_encoder(EncoderSpec(kind="remote", path=path, image_size=16, mean=MEAN, std=STD,
                                    trust_remote_code=True))
    assert seen["trust_remote_code"] is True and seen["local_files_only"] is True and seen["path"] == path
    with torch.no_grad():
        torch.testing.assert_close(enc(_images()), dino(pixel_values=_norm(_images())).last_hidden_state[:, 1:])


ASSET = Path(__file__).resolve().parents[3] / "assets" / "vqrae_encoder"


@pytest.mark.skipif(not (ASSET / "model.safetensors").is_file(), reason="committed encoder not present")
def test_committed_tiny_encoder_tags_held_out_scenes():
    """The committed stand-in VFM (tools/train_vqrae_encoder.py) loads through the registry and still tags unseen
    shapes-world scenes (measured exact match 0.93 on 1,200; a random init scores 0)."""
    from vqrae.data import shapes_set

    enc = build_encoder(EncoderSpec(kind="tiny_vit", path=str(ASSET)))
    assert (enc.grid, enc.width, enc.patch_size) == ((8, 8), 64, 4)
    s = shapes_set(60, seed=123_456)
    with torch.no_grad():
        pred = enc.model.head(enc(s.images).mean(1)) > 0
    assert (pred == s.labels.bool()).all(1).float().mean() >= 0.75
