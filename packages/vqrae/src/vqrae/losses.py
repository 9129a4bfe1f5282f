"""Reconstruction and distillation losses (card §3).

    L_rec     = ℓ2(X, X′) + L_P(X, X′) + λ_G·L_G(X′)                  (the GAN term lives in ``discriminator.py``)
    L_distill = ‖Z_I − T(X)‖²  (mean squared error, T a frozen copy of the initial encoder; stage 2)

Perceptual losses share one protocol, ``Perceptual``: ``loss = p(x, y)`` with x, y images in [0, 1], a scalar tensor,
gradient to x (and y), never to the feature network's parameters. The paper's perceptual model is ConvNeXt-S with weight
1.1 (card §3, Table 7); the weight is the trainer's, not the loss's. Implementations:

    NoPerceptual       "none":     0
    FeaturePerceptual  "features": LPIPS-style distance on any feature function, no learned linear heads
    LPIPSPerceptual    "lpips":    the ``lpips`` package (optional; needs its torchvision backbone weights locally)
    TimmPerceptual     "timm":     FeaturePerceptual on a timm ``features_only`` network (ConvNeXt-S in the paper)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from shared.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PERCEPTUAL_KINDS",
    "FeaturePerceptual",
    "LPIPSPerceptual",
    "NoPerceptual",
    "Perceptual",
    "TimmPerceptual",
    "build_perceptual",
    "distillation_loss",
    "pixel_loss",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PERCEPTUAL_KINDS: tuple[str, ...] = ("none", "features", "lpips", "timm")


def pixel_loss(x: Tensor, y: Tensor, l2_weight: float = 1.0, l1_weight: float = 0.0) -> Tensor:
    """l2_weight·mean((x − y)²) + l1_weight·mean(|x − y|), mean over every element.

    VQRAE uses ℓ2 (card §3, §6: RAE used L1); the L1 term is ours for ablations, off by default.
    """
    if x.shape != y.shape:
        raise ValueError(f"pixel_loss: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    d = x - y
    loss = l2_weight * d.pow(2).mean()
    if l1_weight:
        loss = loss + l1_weight * d.abs().mean()
    return loss


def distillation_loss(z: Tensor, z_teacher: Tensor) -> Tensor:
    """Self-distillation, card §3 stage 2: mean((Z_I − T(X))²) over all elements; the teacher side is detached.

    Z_I are the student encoder's **continuous** (pre-quantisation) features, T(X) the frozen initial encoder's.
    """
    if z.shape != z_teacher.shape:
        raise ValueError(f"distillation_loss: student features {tuple(z.shape)} and teacher features "
                         f"{tuple(z_teacher.shape)} must have the same shape")
    return (z - z_teacher.detach()).pow(2).mean()


@runtime_checkable
class Perceptual(Protocol):
    """A perceptual distance: ``(x, y) -> scalar tensor``, images (B, 3, H, W) in [0, 1]."""

    def __call__(self, x: Tensor, y: Tensor) -> Tensor: ...


class NoPerceptual(nn.Module):
    """``loss.perceptual = "none"``: always 0 (a zero tensor on x's device and dtype)."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(())


def _unit(f: Tensor, dim: int, eps: float = 1e-10) -> Tensor:
    """f / (‖f‖₂ + eps) along ``dim`` (LPIPS's ``normalize_tensor``)."""
    return f / (f.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


def _layer_distance(fx: Tensor, fy: Tensor) -> Tensor:
    """Σ_c (f̂x − f̂y)² averaged over positions and batch; (B, C, H, W) uses dim 1 as channels, (B, N, C) dim −1."""
    if fx.dim() == 4:
        dim = 1
    elif fx.dim() == 3:
        dim = -1
    else:
        raise ValueError(f"FeaturePerceptual: feature tensors must be (B, C, H, W) or (B, N, C), got {tuple(fx.shape)}")
    return (_unit(fx, dim) - _unit(fy, dim)).pow(2).sum(dim=dim).mean()


class FeaturePerceptual(nn.Module):
    """LPIPS-style distance without learned linear heads ("LPIPS baseline", Zhang et al. 2018, ``lpips=False``).

        d(x, y) = Σ_l w_l · mean_{b, positions} ‖ f̂_l(x) − f̂_l(y) ‖²,   f̂ = f / ‖f‖ along channels

    ``feature_fn(x)`` returns a list of (B, C, H, W) or (B, N, C) tensors (it owns any input normalisation it needs;
    x arrives in [0, 1]). ``weights`` (one per layer) default to 1. If ``feature_fn`` is an ``nn.Module`` it is
    registered, frozen (``requires_grad_(False)``) and kept in eval mode; gradients flow to the inputs only.
    Each layer term lies in [0, 4].
    """

    def __init__(self, feature_fn: Callable[[Tensor], Sequence[Tensor]], weights: Sequence[float] | None = None):
        super().__init__()
        if not callable(feature_fn):
            raise ConfigError("FeaturePerceptual: feature_fn must be callable (image batch -> list of feature maps)")
        if isinstance(feature_fn, nn.Module):
            feature_fn.requires_grad_(False)
            feature_fn.eval()
        self.feature_fn = feature_fn
        self.weights = None if weights is None else [float(w) for w in weights]

    def train(self, mode: bool = True) -> FeaturePerceptual:
        """Switch this module's mode but keep a frozen feature network in eval mode (no dropout / stat updates)."""
        super().train(mode)
        if isinstance(self.feature_fn, nn.Module):
            self.feature_fn.eval()
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"perceptual loss: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        fxs, fys = list(self.feature_fn(x)), list(self.feature_fn(y))
        if self.weights is not None and len(self.weights) != len(fxs):
            raise ConfigError(f"FeaturePerceptual: {len(self.weights)} weights for {len(fxs)} feature layers; "
                              f"give one weight per layer or weights=None")
        weights = self.weights if self.weights is not None else [1.0] * len(fxs)
        return sum(w * _layer_distance(fx, fy) for w, fx, fy in zip(weights, fxs, fys, strict=True))


class _ImageNetNormalized(nn.Module):
    """Wraps a network: x ∈ [0, 1] → net((x − mean) / std) with the ImageNet constants above."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.net((x - self.mean) / self.std))


class TimmPerceptual(FeaturePerceptual):
    """``FeaturePerceptual`` on the stage outputs of ``timm.create_model(model_name, features_only=True)``.

    Built offline with ``pretrained=False``; a local ``weights_path`` (``.safetensors`` / ``.pth`` of the full
    classification model) is loaded by timm through ``pretrained_cfg_overlay=dict(file=...)``, which applies the model's
    checkpoint filter before the feature wrapper. ``layers`` are timm ``out_indices`` (None: all stages). Inputs in
    [0, 1] are normalised with ImageNet mean/std. The paper uses ConvNeXt-S (``convnext_small``), weight 1.1 (card §3).

    Deviation [our reading]: TiTok's ConvNeXt-S term (``bytedance/1d-tokenizer`` ``perceptual_loss.py``) is the MSE
    between classifier *logits* at 224 px, averaged with LPIPS as (1.0·LPIPS + 0.1·ConvNeXt)/1.1; ours is the
    LPIPS-style distance on intermediate stage features at the input resolution.
    """

    def __init__(self, model_name: str, weights_path: str = "", layers: Sequence[int] | None = None,
                 weights: Sequence[float] | None = None):
        try:
            import timm
        except ImportError as err:  # pragma: no cover - timm is in the dev group
            raise ImportError("loss.perceptual='timm' needs timm: `pip install timm` "
                              "(or `uv sync --extra timm`)") from err
        kw: dict[str, Any] = {"features_only": True}
        if layers is not None:
            kw["out_indices"] = tuple(int(i) for i in layers)
        if weights_path:
            if not Path(weights_path).is_file():
                raise FileNotFoundError(f"TimmPerceptual: weights_path={weights_path!r} is not a file; point it at "
                                        f"a local .safetensors/.pth of {model_name}, or leave it empty for random "
                                        f"weights")
            net = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)},
                                    **kw)
        else:
            net = timm.create_model(model_name, pretrained=False, **kw)
        super().__init__(_ImageNetNormalized(net), weights=weights)
        self.model_name = model_name


class LPIPSPerceptual(nn.Module):
    """LPIPS (Zhang et al. 2018) from the optional ``lpips`` package, imported lazily: mean over the batch of
    ``lpips.LPIPS(net=net)(x, y, normalize=True)`` (``normalize=True`` maps [0, 1] → [−1, 1]).

    The package ships its linear-head weights but loads the AlexNet/VGG backbone from torchvision's model zoo, so
    offline those weights must already be in the torch hub cache (``$TORCH_HOME/hub/checkpoints``). Extra keyword
    arguments go to ``lpips.LPIPS`` (e.g. ``pnet_rand=True`` for a random backbone).
    """

    NETS = ("vgg", "alex")

    def __init__(self, net: str = "vgg", **kw: Any):
        super().__init__()
        if net not in self.NETS:
            raise ConfigError(f"LPIPSPerceptual: net={net!r} is not one of {self.NETS}")
        try:
            import lpips
        except ImportError as err:
            raise ImportError(
                "loss.perceptual='lpips' needs the lpips package: `pip install lpips`; its "
                f"{net} backbone weights must also be in the torch hub cache ($TORCH_HOME/hub/checkpoints) since "
                "there is no network — or use loss.perceptual='timm' / 'features' / 'none'") from err
        kw.setdefault("verbose", False)
        self.lpips = lpips.LPIPS(net=net, **kw)
        self.lpips.requires_grad_(False)
        self.lpips.eval()

    def train(self, mode: bool = True) -> LPIPSPerceptual:
        """Keep the LPIPS network in eval mode whatever the mode of the surrounding model."""
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.lpips(x, y, normalize=True).mean()


def build_perceptual(kind: str, **kwargs: Any) -> Perceptual:
    """Perceptual loss by ``loss.perceptual`` kind: "none" | "features" (needs ``feature_fn=``) | "lpips" | "timm".

    Keyword arguments go to the class: ``FeaturePerceptual(feature_fn, weights)``, ``LPIPSPerceptual(net, ...)``,
    ``TimmPerceptual(model_name, weights_path, layers, weights)``.
    """
    if kind == "none":
        return NoPerceptual()
    if kind == "features":
        if "feature_fn" not in kwargs:
            raise ConfigError("loss.perceptual='features' needs a feature_fn keyword (a callable returning a list of "
                              "feature maps); use loss.perceptual='none' to switch the term off")
        return FeaturePerceptual(**kwargs)
    if kind == "lpips":
        return LPIPSPerceptual(**kwargs)
    if kind == "timm":
        if "model_name" not in kwargs:
            raise ConfigError("loss.perceptual='timm' needs model_name (e.g. 'convnext_small', the paper's ConvNeXt-S)")
        return TimmPerceptual(**kwargs)
    raise ConfigError(f"loss.perceptual={kind!r} is unknown; choose one of {PERCEPTUAL_KINDS}")
