import pytest
import torch
from torch import nn

from vqrae.decoder import DecoderSpec, ViTDecoder
from vqrae.encoders import EncoderSpec, build_encoder
from vqrae.model import VQRAE
from vqrae.quantizers import build_quantizer
from vqrae.train import build
from vqrae.vit import patchify, unpatchify



def test_patchify_is_a_bijection_and_row_major():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    t = patchify(x, 4)
    assert t.shape == (2, 6, 48)
    # token 1 is the top row's second patch: pixels rows 0..3, columns 4..7, channel-last
    assert torch.equal(t[0, 1].reshape(4, 4, 3), x[0, :, 0:4, 4:8].permute(1, 2, 0))
    assert torch.equal(unpatchify(t, (2, 3), 4), x)


def test_decoder_shapes_and_no_convolutions():
    dec = ViTDecoder(DecoderSpec(grid=(4, 4), patch=4, width=16, depth=2, heads=2, mlp_dim=32))
    out = dec(torch.randn(3, 16, 16))
    assert out.shape == (3, 3, 16, 16)
    assert not any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d) for m in dec.modules())
    with pytest.raises(ValueError, match="decoder expects"):
        dec(torch.randn(3, 15, 16))


def test_decoder_mirrors_the_encoder_unless_overridden(make_config):
    cfg = make_config()
    model, teacher = build(cfg)
    s = model.decoder.spec
    assert (s.width, s.depth, s.heads, s.mlp_dim) == (model.encoder.width, model.encoder.depth,
                                                      model.encoder.heads, model.encoder.mlp_dim)
    cfg2 = make_config("decoder.depth=3", "decoder.width=32")
    model2, _ = build(cfg2)
    assert (model2.decoder.spec.depth, model2.decoder.spec.width) == (3, 32)
    # the teacher is a frozen copy of the initial encoder
    assert all(not p.requires_grad for p in teacher.parameters())
    for a, b in zip(teacher.parameters(), model.encoder.parameters(), strict=True):
        assert torch.equal(a, b)


def _model(encoder_dir) -> VQRAE:
    enc = build_encoder(EncoderSpec(kind="tiny_vit", path=str(encoder_dir), image_size=16))
    q = build_quantizer("simvq", 32, 24)
    dec = ViTDecoder(DecoderSpec(grid=enc.grid, patch=4, width=16, depth=1, heads=2, mlp_dim=32))
    return VQRAE(enc, q, dec)


def test_encode_decode_equals_the_forward_pass(encoder_dir):
    torch.manual_seed(0)
    model = _model(encoder_dir).eval()
    x = torch.rand(5, 3, 16, 16)
    ids = model.encode(x)
    assert ids.shape == (5, 4, 4) and ids.dtype == torch.long
    out = model(x)
    assert torch.equal(ids.reshape(5, -1), out.quant.indices)
    # decoding the ids gives the forward pass's reconstruction (clamped), so tokens carry everything the decoder sees
    assert torch.allclose(model.decode(ids), out.recon.clamp(0, 1), atol=1e-6)
    assert torch.allclose(model.decode(ids.reshape(5, -1)), model.decode(ids))


def test_decode_rejects_bad_ids(encoder_dir):
    model = _model(encoder_dir)
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode(torch.full((1, 16), 32))
    with pytest.raises(ValueError, match="grid"):
        model.decode(torch.zeros(1, 15, dtype=torch.long))


def test_straight_through_reaches_the_encoder_in_stage_two(encoder_dir):
    model = _model(encoder_dir).train()
    x = torch.rand(2, 3, 16, 16)
    out = model(x)
    (out.recon - x).pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.encoder.named_parameters() if ".head." not in n}  # the tagger head is unused
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert model.quantizer.codebook.grad is None  # the frozen Gaussian codebook is a buffer


def test_noise_tau_changes_training_outputs_only(encoder_dir):
    model = _model(encoder_dir)
    model.noise_tau = 0.5
    x = torch.rand(2, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x).recon, model(x).recon)
    model.train()
    torch.manual_seed(1)
    a = model(x).recon
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x).recon)
