"""Semantic encoders E behind one small protocol (card §2, §6, §7; RAE's stage-1 interface is the model).

    tokens = encoder(images)     images (B, 3, H, W) in [0, 1]  →  Z_I (B, N, width), N = gh·gw, row-major
    x = (images − mean) / std    inside the encoder, with the mean/std of the spec (never fetched from a processor)

Only patch tokens are returned: CLS, register and other prefix tokens are dropped (RAE drops DINOv2's CLS + 4
registers). ``hidden_states(images)`` gives every block's patch tokens (for feature losses). ``width``, ``patch_size``
and the depth/heads/MLP width a mirrored decoder needs are read from the model's own config.

Kinds (``build_encoder(EncoderSpec(kind=..., path=...))``; add one with ``@register_encoder("name")``):

* ``tiny_vit``  ours (``TinyViT``), a folder written by ``TinyViT.save_pretrained`` (card §7's stand-in VFM)
* ``siglip``    transformers ``SiglipVisionModel`` (a vision-only or a full SigLIP save); ``last_hidden_state`` is
                already post-LayerNorm and SigLIP has no CLS token
* ``siglip2``   transformers ``Siglip2VisionModel`` (NaFlex): we patchify into (B, N, p·p·3) patches flattened
                (p, p, C), with ``spatial_shapes`` = (gh, gw) and an all-ones ``pixel_attention_mask``
* ``dinov2``    ``Dinov2Model`` or ``Dinov2WithRegistersModel`` (from the folder's ``model_type``); CLS and
                ``num_register_tokens`` dropped
* ``timm``      a timm ``VisionTransformer``: ``config.json`` {"model_name", "kwargs"} + ``model.safetensors``;
                ``num_prefix_tokens`` dropped
* ``remote``    ``AutoModel`` with the folder's own modelling code (e.g. InternViT) — only with
                ``trust_remote_code``; the trailing N tokens are the patches (CLS-first layouts)

``non_affine_last_norm`` makes the final LayerNorm non-affine (weight and bias removed), RAE's treatment of DINOv2.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from vqrae.vit import Transformer, patchify, sincos_2d

__all__ = ["ENCODER_KINDS", "Dinov2Encoder", "Encoder", "EncoderSpec", "RemoteEncoder", "Siglip2Encoder",
           "SiglipEncoder", "TimmEncoder", "TinyViT", "TinyViTConfig", "TinyViTEncoder", "build_encoder",
           "register_encoder"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# ------------------------------------------------------------------------------------------------------ protocol
@runtime_checkable
class Encoder(Protocol):
    """An ``nn.Module``: images (B, 3, H, W) in [0, 1] → patch tokens (B, gh·gw, width), row-major over ``grid``."""

    patch_size: int
    width: int
    image_size: int
    grid: tuple[int, int]

    def forward(self, images: Tensor) -> Tensor: ...

    def hidden_states(self, images: Tensor) -> list[Tensor]: ...


@dataclass
class EncoderSpec:
    """What to build: ``kind``, the local folder ``path``, the input resolution ``image_size`` and the input
    normalisation ``mean``/``std`` (per channel, set in the config: SigLIP 0.5/0.5, DINOv2 and InternViT ImageNet's)."""

    kind: str
    path: str = ""
    image_size: int = 32
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    trust_remote_code: bool = False
    non_affine_last_norm: bool = False


_REGISTRY: dict[str, Callable[[EncoderSpec], nn.Module]] = {}


def register_encoder(kind: str) -> Callable:
    """Class decorator: ``build_encoder`` calls ``cls.from_spec(spec)`` for ``spec.kind == kind``."""

    def deco(cls):
        if kind in _REGISTRY:
            raise ValueError(f"encoder kind {kind!r} is already registered")
        _REGISTRY[kind] = cls.from_spec
        return cls

    return deco


def build_encoder(spec: EncoderSpec) -> Encoder:
    """The encoder ``spec`` describes, in eval mode (freeze or unfreeze it in the trainer)."""
    if spec.kind not in _REGISTRY:
        raise ValueError(f"encoder.kind={spec.kind!r} is not one of {sorted(_REGISTRY)}; set encoder.kind to one")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ValueError(f"encoder.mean={list(spec.mean)} / encoder.std={list(spec.std)}: expected 3 values each, "
                         "std > 0 (e.g. 0.5,0.5,0.5 for SigLIP)")
    enc = _REGISTRY[spec.kind](spec)
    return enc.eval()


# ------------------------------------------------------------------------------------------------------ helpers
def _require_folder(spec: EncoderSpec, needs: str) -> Path:
    """The spec's folder, checked before anything is built; FileNotFoundError naming the path and what it needs."""
    if not spec.path:
        raise FileNotFoundError(f"encoder.path is empty for encoder.kind={spec.kind}; set it to a local folder with "
                                f"{needs}")
    folder = Path(spec.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"encoder.path={spec.path!r} is not a folder; it should hold {needs}")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"encoder.path={spec.path!r} has no {CONFIG_NAME}; it should hold {needs}")
    return folder


def _read_config(folder: Path) -> dict:
    with open(folder / CONFIG_NAME, encoding="utf-8") as f:
        return json.load(f)


def _check_geometry(spec: EncoderSpec, patch: int) -> tuple[int, int]:
    if spec.image_size < patch or spec.image_size % patch:
        lo = max(patch, spec.image_size // patch * patch)
        raise ValueError(f"image size {spec.image_size} (encoder.image_size / data.image_size) is not a multiple of "
                         f"the encoder's patch size {patch} (from {spec.path or 'its config'}); use e.g. {lo} or "
                         f"{lo + patch}")
    g = spec.image_size // patch
    return g, g


def _make_non_affine(norm: nn.Module | None, where: str) -> None:
    """RAE's trick: drop the final LayerNorm's weight and bias (x̂ = (x − μ)/σ only)."""
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
        raise ValueError(f"encoder.non_affine_last_norm=true but {where} is not an affine LayerNorm "
                         f"({type(norm).__name__}); set encoder.non_affine_last_norm=false")
    norm.elementwise_affine = False
    norm.weight = None
    norm.bias = None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (unused text-tower weights of a full SigLIP save are expected)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load_hf(cls: Any, folder: Path, **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained`` from a local folder only; any missing weight is an error (never silently random)."""
    with _quiet_transformers():
        model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ValueError(f"encoder.path={str(folder)!r}: {len(missing)} weights of {cls.__name__} are missing from "
                         f"the checkpoint (e.g. {sorted(missing)[:3]}); is encoder.kind right for this folder?")
    return model


class _EncoderBase(nn.Module):
    """Normalisation, geometry and the input check shared by every kind."""

    def __init__(self, spec: EncoderSpec, *, patch_size: int, width: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.spec = spec
        self.patch_size = int(patch_size)
        self.width = int(width)
        self.depth, self.heads, self.mlp_dim = int(depth), int(heads), int(mlp_dim)
        self.image_size = int(spec.image_size)
        self.grid = _check_geometry(spec, self.patch_size)
        self.register_buffer("mean", torch.tensor(list(spec.mean), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(list(spec.std), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def normalise(self, images: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """(images − mean) / std after checking the shape is (B, 3, image_size, image_size)."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (self.image_size,) * 2:
            raise ValueError(f"encoder expects images (B, 3, {self.image_size}, {self.image_size}) in [0, 1], got "
                             f"{tuple(images.shape)}")
        x = (images.float() - self.mean) / self.std
        return x if dtype is None else x.to(dtype)

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _patches(self, tokens: Tensor) -> Tensor:
        """The trailing gh·gw tokens (prefix tokens — CLS, registers — come first in every supported layout)."""
        if tokens.shape[1] < self.num_tokens:
            raise RuntimeError(f"encoder returned {tokens.shape[1]} tokens, fewer than the {self.num_tokens} patches")
        return tokens[:, tokens.shape[1] - self.num_tokens:]


# ------------------------------------------------------------------------------------------------------ tiny ViT
@dataclass
class TinyViTConfig:
    """Our tiny ViT (card §7): 32 px, patch 4 → 8×8 tokens of ``width``; a multi-label tagger head of 18 classes."""

    image_size: int = 32
    patch: int = 4
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 18

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size // self.patch, self.image_size // self.patch

    @property
    def mlp_dim(self) -> int:
        return round(self.width * self.mlp_ratio)


class TinyViT(nn.Module):
    """Linear patch embedding on ``patchify`` + learned position embedding → pre-norm ``Transformer`` (final LN).

    ``forward_features(x)`` takes already-normalised images and returns (B, N, width); ``logits(x)`` is a linear head
    on the mean-pooled tokens (the tagger used to pretrain it)."""

    def __init__(self, config: TinyViTConfig):
        super().__init__()
        if config.image_size % config.patch:
            raise ValueError(f"TinyViTConfig.image_size {config.image_size} is not a multiple of patch {config.patch}")
        self.config = config
        self.embed = nn.Linear(config.patch * config.patch * 3, config.width)
        n = config.grid[0] * config.grid[1]
        init = sincos_2d(config.grid, config.width) if config.width % 4 == 0 else torch.randn(n, config.width) * 0.02
        self.pos = nn.Parameter(init.clone()[None])
        self.transformer = Transformer(config.width, config.depth, config.heads, config.mlp_dim)
        self.head = nn.Linear(config.width, config.num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _embed(self, x: Tensor) -> Tensor:
        return self.embed(patchify(x, self.config.patch)) + self.pos

    def forward_features(self, x: Tensor) -> Tensor:
        return self.transformer(self._embed(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def hidden_states(self, x: Tensor) -> list[Tensor]:
        return self.transformer.hidden_states(self._embed(x))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x).mean(1))

    def save_pretrained(self, directory: str | Path, *, metadata: dict | None = None) -> None:
        """``config.json`` (the config, plus ``metadata`` such as the input mean/std) and ``model.safetensors``,
        each written to a temporary file and moved into place with ``os.replace``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = {"model_type": "vqrae_tiny_vit", **asdict(self.config)}
        if metadata:
            cfg["metadata"] = metadata
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        _atomic_write(d / WEIGHTS_NAME, lambda p: save_file(state, p))
        _atomic_write(d / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(cfg, indent=2) + "\n"))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TinyViT:
        from safetensors.torch import load_file

        d = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{str(d)!r} has no {name}; expected a folder written by "
                                        "TinyViT.save_pretrained (config.json + model.safetensors)")
        raw = _read_config(d)
        names = {f.name for f in fields(TinyViTConfig)}
        model = cls(TinyViTConfig(**{k: v for k, v in raw.items() if k in names}))
        model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        return model


def _atomic_write(target: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is meant to be read by others
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@register_encoder("tiny_vit")
class TinyViTEncoder(_EncoderBase):
    """``TinyViT`` behind the protocol; wraps an in-memory model or loads ``spec.path``."""

    def __init__(self, model: TinyViT, spec: EncoderSpec):
        c = model.config
        if spec.image_size != c.image_size:
            raise ValueError(f"encoder.image_size (= data.image_size) is {spec.image_size} but the tiny ViT "
                             f"{spec.path or ''} has a learned {c.grid[0]}×{c.grid[1]} position grid for "
                             f"{c.image_size} px; set data.image_size={c.image_size}")
        super().__init__(spec, patch_size=c.patch, width=c.width, depth=c.depth, heads=c.heads, mlp_dim=c.mlp_dim)
        self.model = model
        if spec.non_affine_last_norm:
            _make_non_affine(model.transformer.norm, "the tiny ViT's final norm")

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> TinyViTEncoder:
        folder = _require_folder(spec, "config.json + model.safetensors written by TinyViT.save_pretrained "
                                       "(e.g. assets/vqrae_encoder from tools/train_vqrae_encoder.py)")
        meta = _read_config(folder).get("metadata", {})
        off = [f"encoder.{k}={list(getattr(spec, k))} (trained with {meta[k]})" for k in ("mean", "std")
               if k in meta and [round(v, 6) for v in meta[k]] != [round(v, 6) for v in getattr(spec, k)]]
        if off:
            warnings.warn(f"the input normalisation differs from the one the encoder at {spec.path!r} was trained "
                          f"with: {', '.join(off)}", stacklevel=3)
        return cls(TinyViT.from_pretrained(folder), spec)

    def forward(self, images: Tensor) -> Tensor:
        return self.model.forward_features(self.normalise(images, self._param_dtype()))

    def hidden_states(self, images: Tensor) -> list[Tensor]:
        return self.model.hidden_states(self.normalise(images, self._param_dtype()))


# ------------------------------------------------------------------------------------------------------ transformers
_HF_NEEDS = "a transformers save_pretrained folder (config.json + model.safetensors)"


def _hf_geometry(cfg: Any) -> dict:
    """width, depth, heads, MLP width of a ViT-like transformers config."""
    mlp = getattr(cfg, "intermediate_size", None) or int(cfg.hidden_size * getattr(cfg, "mlp_ratio", 4))
    return {"width": cfg.hidden_size, "depth": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
            "mlp_dim": mlp}


def _model_type(folder: Path, spec: EncoderSpec, allowed: dict[str, str]) -> str:
    mt = _read_config(folder).get("model_type", "")
    if mt not in allowed:
        raise ValueError(f"encoder.path={spec.path!r} holds a {mt or 'model without model_type'!r} config but "
                         f"encoder.kind={spec.kind} expects model_type in {sorted(allowed)}; set encoder.kind to "
                         "match the folder")
    return allowed[mt]


@register_encoder("siglip")
class SiglipEncoder(_EncoderBase):
    """SigLIP: all tokens are patch tokens; ``last_hidden_state`` is post-LayerNorm. Positions are interpolated
    when ``image_size`` differs from the checkpoint's."""

    def __init__(self, model: nn.Module, spec: EncoderSpec):
        cfg = model.config
        super().__init__(spec, patch_size=cfg.patch_size, **_hf_geometry(cfg))
        self.model = model
        self.interpolate = spec.image_size != cfg.image_size
        if spec.non_affine_last_norm:
            _make_non_affine(model.post_layernorm, "SigLIP's post_layernorm")

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> SiglipEncoder:
        folder = _require_folder(spec, _HF_NEEDS)
        _model_type(folder, spec, {"siglip_vision_model": "vision", "siglip": "full"})
        from transformers import SiglipVisionModel

        return cls(_load_hf(SiglipVisionModel, folder), spec)

    def _run(self, images: Tensor, hidden: bool):
        x = self.normalise(images, self._param_dtype())
        return self.model(pixel_values=x, interpolate_pos_encoding=self.interpolate, output_hidden_states=hidden)

    def forward(self, images: Tensor) -> Tensor:
        return self._patches(self._run(images, False).last_hidden_state)

    def hidden_states(self, images: Tensor) -> list[Tensor]:
        return [self._patches(h) for h in self._run(images, True).hidden_states[1:]]


@register_encoder("siglip2")
class Siglip2Encoder(_EncoderBase):
    """SigLIP2 NaFlex: pixel_values (B, N, p·p·3) as ``vqrae.vit.patchify`` lays them out ((p, p, C) per patch,
    row-major grid — the layout of transformers' ``convert_image_to_patches``), spatial_shapes (B, 2) = (gh, gw),
    pixel_attention_mask (B, N) all ones (no padding: every image has the same size)."""

    def __init__(self, model: nn.Module, spec: EncoderSpec):
        cfg = model.config
        super().__init__(spec, patch_size=cfg.patch_size, **_hf_geometry(cfg))
        self.model = model
        if spec.non_affine_last_norm:
            _make_non_affine(model.post_layernorm, "SigLIP2's post_layernorm")

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> Siglip2Encoder:
        folder = _require_folder(spec, _HF_NEEDS)
        _model_type(folder, spec, {"siglip2_vision_model": "vision", "siglip2": "full"})
        from transformers import Siglip2VisionModel

        return cls(_load_hf(Siglip2VisionModel, folder), spec)

    def _run(self, images: Tensor, hidden: bool):
        x = patchify(self.normalise(images, self._param_dtype()), self.patch_size)
        b = x.shape[0]
        shapes = torch.tensor([self.grid], dtype=torch.long, device=x.device).expand(b, 2)
        mask = torch.ones(b, x.shape[1], dtype=torch.long, device=x.device)
        return self.model(pixel_values=x, pixel_attention_mask=mask, spatial_shapes=shapes,
                          output_hidden_states=hidden)

    def forward(self, images: Tensor) -> Tensor:
        return self._patches(self._run(images, False).last_hidden_state)

    def hidden_states(self, images: Tensor) -> list[Tensor]:
        return [self._patches(h) for h in self._run(images, True).hidden_states[1:]]


@register_encoder("dinov2")
class Dinov2Encoder(_EncoderBase):
    """DINOv2 (with or without registers): tokens [CLS, registers…, patches]; CLS + ``num_register_tokens`` dropped.
    Positions are interpolated by the model for other image sizes."""

    def __init__(self, model: nn.Module, spec: EncoderSpec):
        cfg = model.config
        super().__init__(spec, patch_size=cfg.patch_size, **_hf_geometry(cfg))
        self.model = model
        self.num_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        if spec.non_affine_last_norm:
            _make_non_affine(model.layernorm, "DINOv2's final layernorm")

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> Dinov2Encoder:
        folder = _require_folder(spec, _HF_NEEDS)
        which = _model_type(folder, spec, {"dinov2": "plain", "dinov2_with_registers": "registers"})
        import transformers

        model_cls = transformers.Dinov2Model if which == "plain" else transformers.Dinov2WithRegistersModel
        return cls(_load_hf(model_cls, folder), spec)

    def _drop_prefix(self, tokens: Tensor) -> Tensor:
        out = tokens[:, self.num_prefix:]
        if out.shape[1] != self.num_tokens:
            raise RuntimeError(f"DINOv2 returned {out.shape[1]} patch tokens, expected {self.num_tokens}")
        return out

    def _run(self, images: Tensor, hidden: bool):
        return self.model(pixel_values=self.normalise(images, self._param_dtype()), output_hidden_states=hidden)

    def forward(self, images: Tensor) -> Tensor:
        return self._drop_prefix(self._run(images, False).last_hidden_state)

    def hidden_states(self, images: Tensor) -> list[Tensor]:
        return [self._drop_prefix(h) for h in self._run(images, True).hidden_states[1:]]


# ------------------------------------------------------------------------------------------------------ timm
@register_encoder("timm")
class TimmEncoder(_EncoderBase):
    """A timm ``VisionTransformer`` built with ``pretrained=False`` and loaded from ``model.safetensors``; its
    ``num_prefix_tokens`` (CLS, registers) are dropped. A different ``image_size`` resamples the position embedding
    (``set_input_size``)."""

    def __init__(self, model: nn.Module, spec: EncoderSpec):
        ps = model.patch_embed.patch_size
        ps = ps if isinstance(ps, int) else ps[0]
        blk = model.blocks[0]
        super().__init__(spec, patch_size=ps, width=model.embed_dim, depth=len(model.blocks),
                         heads=blk.attn.num_heads, mlp_dim=blk.mlp.fc1.out_features)
        img = model.patch_embed.img_size
        if tuple(img) != (spec.image_size, spec.image_size):
            model.set_input_size(img_size=(spec.image_size, spec.image_size))
        self.model = model
        self.num_prefix = int(model.num_prefix_tokens)
        if spec.non_affine_last_norm:
            _make_non_affine(model.norm, "the timm model's final norm")

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> TimmEncoder:
        needs = 'config.json {"model_name": ..., "kwargs": {...}} + model.safetensors (the model\'s state dict)'
        folder = _require_folder(spec, needs)
        if not (folder / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"encoder.path={spec.path!r} has no {WEIGHTS_NAME}; it should hold {needs}")
        raw = _read_config(folder)
        if "model_name" not in raw:
            raise ValueError(f"{folder / CONFIG_NAME} lacks \"model_name\"; it should read {needs}")
        try:
            import timm
        except ImportError as e:  # optional dependency
            raise ImportError("encoder.kind=timm needs timm: uv pip install 'vqrae[timm]'") from e
        from safetensors.torch import load_file

        model = timm.create_model(raw["model_name"], pretrained=False, **raw.get("kwargs", {}))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return cls(model, spec)

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.model.forward_features(self.normalise(images, self._param_dtype()))
        return tokens[:, self.num_prefix:]

    def hidden_states(self, images: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(self.normalise(images, self._param_dtype()), norm=False,
                                                output_fmt="NLC", intermediates_only=True)


# ------------------------------------------------------------------------------------------------------ remote code
@register_encoder("remote")
class RemoteEncoder(_EncoderBase):
    """A model with its own modelling code in ``spec.path`` (e.g. InternViT-300M), loaded by ``AutoModel`` only when
    ``spec.trust_remote_code`` is set; the trailing gh·gw tokens of ``last_hidden_state`` are the patches."""

    def __init__(self, model: nn.Module, spec: EncoderSpec):
        cfg = model.config
        ps = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        super().__init__(spec, patch_size=ps, **_hf_geometry(cfg))
        self.model = model
        if spec.non_affine_last_norm:
            raise ValueError("encoder.non_affine_last_norm=true is not supported for encoder.kind=remote (its last "
                             "norm is not known); set it to false")

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> RemoteEncoder:
        if not spec.trust_remote_code:
            raise ValueError(f"encoder.kind=remote runs the Python modelling code shipped in {spec.path!r}; set "
                             "encoder.trust_remote_code=true if you trust it")
        folder = _require_folder(spec, "config.json (with auto_map), the modelling .py files and the weights")
        from transformers import AutoModel

        return cls(_load_hf(AutoModel, folder, trust_remote_code=True), spec)

    def _run(self, images: Tensor, hidden: bool):
        return self.model(pixel_values=self.normalise(images, self._param_dtype()), output_hidden_states=hidden,
                          return_dict=True)

    def forward(self, images: Tensor) -> Tensor:
        return self._patches(self._run(images, False).last_hidden_state)

    def hidden_states(self, images: Tensor) -> list[Tensor]:
        return [self._patches(h) for h in self._run(images, True).hidden_states[1:]]


ENCODER_KINDS: tuple[str, ...] = tuple(_REGISTRY)
