"""Pixel, perceptual and distillation losses: hand values, frozen feature nets, offline timm, the lpips import path."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from vqrae.losses import (
    IMAGENET_MEAN,
    FeaturePerceptual,
    LPIPSPerceptual,
    NoPerceptual,
    Perceptual,
    TimmPerceptual,
    build_perceptual,
    distillation_loss,
    pixel_loss,
)

# ---------------------------------------------------------------- pixel / distillation


def _ramp_pair() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, 1, 2, 2)
    y = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    return x, y  # squared errors 0.01, 0.04, 0.09, 0.16 → mean 0.075; absolute errors mean 0.25


def test_pixel_loss_hand_values() -> None:
    x, y = _ramp_pair()
    assert pixel_loss(x, y).item() == pytest.approx(0.075, abs=1e-7)
    assert pixel_loss(x, y, l2_weight=0.0, l1_weight=1.0).item() == pytest.approx(0.25, abs=1e-7)
    assert pixel_loss(x, y, l2_weight=2.0, l1_weight=3.0).item() == pytest.approx(0.9, abs=1e-6)


def test_pixel_loss_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        pixel_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_distillation_loss_hand_value_and_teacher_detached() -> None:
    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = distillation_loss(z, t)
    assert loss.item() == pytest.approx(2.5)  # (1 + 4) / 2
    loss.backward()
    torch.testing.assert_close(z.grad, torch.tensor([[1.0, 2.0]]))  # 2·(z − t)/2
    assert t.grad is None


def test_distillation_loss_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(2, 4, 8), torch.zeros(2, 4, 9))


# ---------------------------------------------------------------- FeaturePerceptual


class _TinyNet(nn.Module):
    """Two conv feature maps and one token tensor (B, N, C)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = torch.relu(self.c1(x))
        f2 = self.drop(torch.relu(self.c2(f1)))
        return [f1, f2, f2.flatten(2).transpose(1, 2)]


def test_feature_perceptual_hand_values() -> None:
    def ident(t: torch.Tensor) -> list[torch.Tensor]:
        return [t]

    p = FeaturePerceptual(ident)
    # (B, C, H, W) with C = 2: unit vectors (1, 0) and (0, 1) → squared distance 2
    assert p(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)).item() == \
        pytest.approx(2.0)
    # (B, N, C): (3, 4)/5 vs (4, 3)/5 → 0.04 + 0.04; scale does not matter after unit normalisation
    a, b = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[4.0, 3.0]]])
    assert p(a, b).item() == pytest.approx(0.08, abs=1e-6)
    assert p(5 * a, b).item() == pytest.approx(0.08, abs=1e-6)


def test_feature_perceptual_layer_weights() -> None:
    def two(t: torch.Tensor) -> list[torch.Tensor]:
        return [t, t.flip(1)]

    x, y = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3)
    unweighted = FeaturePerceptual(two)(x, y)
    weighted = FeaturePerceptual(two, weights=[2.0, 0.5])(x, y)
    # both layers give the same distance (a channel permutation), so weights (2, 0.5) scale the sum by 2.5 / 2
    assert weighted.item() == pytest.approx(unweighted.item() * 1.25, rel=1e-5)
    with pytest.raises(ValueError, match="one weight per layer"):
        FeaturePerceptual(two, weights=[1.0])(x, y)


def test_feature_perceptual_zero_on_identical_positive_otherwise() -> None:
    p = FeaturePerceptual(_TinyNet())
    x = torch.rand(2, 3, 16, 16)
    assert p(x, x.clone()).item() == pytest.approx(0.0, abs=1e-10)
    assert p(x, torch.rand(2, 3, 16, 16)).item() > 1e-3


def test_feature_perceptual_grads_reach_input_not_frozen_net() -> None:
    net = _TinyNet()
    p = FeaturePerceptual(net)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    p(x, torch.rand(2, 3, 16, 16)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not q.requires_grad and q.grad is None for q in net.parameters())


def test_feature_perceptual_keeps_net_in_eval_mode() -> None:
    net = _TinyNet()
    holder = nn.ModuleDict({"perceptual": FeaturePerceptual(net)})
    holder.train()
    assert not net.training  # dropout off: the loss is deterministic
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert holder["perceptual"](x, y).item() == holder["perceptual"](x, y).item()


def test_protocol_membership() -> None:
    assert isinstance(FeaturePerceptual(lambda t: [t]), Perceptual)
    assert isinstance(NoPerceptual(), Perceptual)


# ---------------------------------------------------------------- timm


def test_timm_perceptual_builds_offline_and_is_finite() -> None:
    p = TimmPerceptual("convnext_atto", layers=(0, 1))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    loss = p(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    assert p(y, y).item() == pytest.approx(0.0, abs=1e-8)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not q.requires_grad for q in p.parameters())
    torch.testing.assert_close(p.feature_fn.mean.flatten(), torch.tensor(IMAGENET_MEAN))


def test_timm_perceptual_loads_local_weights(tmp_path) -> None:
    import timm

    torch.manual_seed(123)
    full = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "atto.pth"
    torch.save(full.state_dict(), path)
    p = TimmPerceptual("convnext_atto", weights_path=str(path), layers=(0,))
    torch.testing.assert_close(p.feature_fn.net.state_dict()["stem_0.weight"], full.state_dict()["stem.0.weight"])
    fresh = TimmPerceptual("convnext_atto", layers=(0,))
    assert not torch.equal(fresh.feature_fn.net.state_dict()["stem_0.weight"], full.state_dict()["stem.0.weight"])


def test_timm_perceptual_missing_weights_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="weights_path"):
        TimmPerceptual("convnext_atto", weights_path=str(tmp_path / "nope.safetensors"))


# ---------------------------------------------------------------- lpips


def test_lpips_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` raise ImportError
    with pytest.raises(ImportError, match="pip install lpips") as info:
        LPIPSPerceptual("vgg")
    assert "torch hub cache" in str(info.value)


def test_lpips_bad_net_names_the_choices() -> None:
    with pytest.raises(ValueError, match="vgg"):
        LPIPSPerceptual("resnet")


def test_lpips_wrapper_calls_package_with_normalize(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict = {}

    class FakeLPIPS(nn.Module):
        def __init__(self, net: str, **kw) -> None:
            super().__init__()
            calls["init"] = (net, kw)
            self.lin = nn.Linear(1, 1)

        def forward(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            calls["normalize"] = normalize
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1) like lpips

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    p = build_perceptual("lpips", net="alex", pnet_rand=True)
    x = torch.zeros(2, 3, 4, 4)
    y = torch.stack([torch.full((3, 4, 4), 0.2), torch.full((3, 4, 4), 0.4)])
    assert p(x, y).item() == pytest.approx(0.3)
    assert calls["init"] == ("alex", {"pnet_rand": True, "verbose": False})
    assert calls["normalize"] is True
    assert not any(q.requires_grad for q in p.parameters())


# ---------------------------------------------------------------- registry


def test_build_perceptual_kinds() -> None:
    assert isinstance(build_perceptual("none"), NoPerceptual)
    assert build_perceptual("none")(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)).item() == 0.0
    assert isinstance(build_perceptual("features", feature_fn=lambda t: [t]), FeaturePerceptual)
    assert isinstance(build_perceptual("timm", model_name="convnext_atto", layers=(0,)), TimmPerceptual)


def test_build_perceptual_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="loss.perceptual") as info:
        build_perceptual("vgg16")
    assert all(k in str(info.value) for k in ("none", "features", "lpips", "timm"))
    with pytest.raises(ValueError, match="feature_fn"):
        build_perceptual("features")
    with pytest.raises(ValueError, match="model_name"):
        build_perceptual("timm")
