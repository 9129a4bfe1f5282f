"""MAGVIT-v2 image tokenizer as Show-o uses it: a taming-style conv encoder/decoder around lookup-free quantisation.

Card §2: Show-o-512 turns a 512×512 image into 32×32 = 1024 codes of a K = 2**13 = 8192 codebook (`showlab/magvitv2`).
Our own modules, written from the reading below; parameter names equal the released checkpoint's so its state dict
loads with `strict=True` and no key conversion.

What was verified against `showlab/Show-o` (commit 45a5a2d):

- `models/modeling_magvitv2.py`: `MAGVITv2` holds `encoder` (`VQGANEncoder`), `decoder` (`VQGANDecoder`) and `quantize`
  (`LFQuantizer`), and its constructor takes **no** arguments, so the released `config.json` carries no architecture:
  the sizes are the class defaults, copied into `MagvitV2Config` (encoder ch 128, ch_mult (1, 2, 2, 4, 4), blocks
  (4, 3, 4, 3, 4); decoder ch_mult (1, 1, 2, 2, 4), blocks (4, 4, 3, 4, 3); z_channels 13; attn_resolutions (5,) with
  resolution 256, which no level ever reaches, so only the two middle blocks attend).
- `LFQuantizer`: persistent buffers `embedding` (K, 13) and `power_vals` (13,); code c ↔ bits b_j = (c >> (13−1−j)) & 1,
  most significant bit first, embedded as 2·b − 1 ∈ {−1, +1}; `get_indices` = Σ_j 2**(13−1−j)·[z_j > 0].
  `get_codebook_entry` assumes a square grid unless a shape is given and lays the codes out row-major (B, h, w, C).
- `models/common_modules.py`: `ResnetBlock` (norm1, conv1, norm2, conv2, `nin_shortcut` when the width changes; no
  `temb_proj` since temb_channels = 0), `AttnBlock` (norm, 1×1 q/k/v/proj_out, one head, scale C**−0.5), `Upsample`
  (nearest ×2 then 3×3 conv), `Downsample` (pad right/bottom by 1, 3×3 stride-2 conv), GroupNorm(32, eps 1e-6), swish.
- `quant_conv` sits inside the encoder and `post_quant_conv` inside the decoder (1×1, z_channels → z_channels).
- Pixels: `inference_t2i.py` decodes with `decode_code` and maps to [0, 1] by clamp((x + 1)/2); `image_transform`
  (training/utils.py) normalises inputs to [−1, 1], which `encode_codes` expects.

Checks: the default config has 95 493 513 parameters and buffers, 364.3 MiB in fp32, equal to the 364.3 MB weights
file of `showlab/magvitv2` in the PaddleNLP mirror listing (`ZHUI/paddlenlp_model_readme`, `showlab/magvitv2/index.md`)
[third-party]; loading the state dict of Show-o's own `MAGVITv2` (run locally from the repository, random weights)
into `MagvitV2` with `strict=True` reproduced `decode_code` to 8e-6 and `get_code` exactly (scratch check).

[our reading] The weight file name of `showlab/magvitv2` is not in the repository (its model card says it was pushed
with a hub mixin); `load_magvitv2` accepts every name Show-o's or the hub mixins' savers write (`WEIGHT_NAMES`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: File names a released checkpoint's weights may have, tried in this order (safetensors first). Show-o's own
#: `models/modeling_utils.py` writes `pytorch_model.safetensors` (safe) or `pytorch_model.bin` (what
#: `training/train.py` saves); huggingface_hub's mixin and diffusers write the other two.
WEIGHT_NAMES: tuple[str, ...] = (
    "model.safetensors",
    "pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
)


@dataclass(frozen=True)
class MagvitV2Config:
    """Sizes of the MAGVIT-v2 tokenizer. Defaults = the released `showlab/magvitv2` (Show-o's class defaults)."""

    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    encoder_num_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_num_res_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    attn_resolutions: tuple[int, ...] = (5,)
    resolution: int = 256
    in_ch: int = 3
    out_ch: int = 3
    z_channels: int = 13  # = the LFQ code dimension: K = 2**z_channels

    def __post_init__(self) -> None:
        for name in ("encoder", "decoder"):
            mult, blocks = getattr(self, f"{name}_ch_mult"), getattr(self, f"{name}_num_res_blocks")
            if len(mult) != len(blocks):
                raise ValueError(f"MagvitV2Config: {name}_ch_mult {mult} and {name}_num_res_blocks {blocks} differ in length")
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError("MagvitV2Config: encoder and decoder need the same number of levels (same spatial factor)")
        if self.ch % 32:
            raise ValueError(f"MagvitV2Config: ch={self.ch} must be a multiple of 32 (GroupNorm with 32 groups)")
        if not 1 <= self.z_channels <= 30:
            raise ValueError(f"MagvitV2Config: z_channels={self.z_channels} out of range [1, 30]")

    @property
    def codebook_size(self) -> int:
        return 2**self.z_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.decoder_ch_mult) - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> MagvitV2Config:
        """Read our keys from a config dict, ignoring others (the released config.json holds only class metadata)."""
        known = {f.name for f in fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**kw)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv2(swish(norm2(conv1(swish(norm1(x)))))), 1×1 `nin_shortcut` on x when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1 projections, scale C**−0.5, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √C) v
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _level(blocks: nn.ModuleList, attn: nn.ModuleList) -> nn.Module:
    level = nn.Module()
    level.block = blocks
    level.attn = attn
    return level


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


def _run_level(level: nn.Module, h: Tensor) -> Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn) > 0:
            h = level.attn[i](h)
    return h


def _run_mid(mid: nn.Module, h: Tensor) -> Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder(nn.Module):
    """Pixels (B, 3, H, W) in [−1, 1] → pre-quantisation latents (B, z, H/f, W/f), f = 2**(levels − 1)."""

    def __init__(self, c: MagvitV2Config):
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_ch, c.ch, 3, padding=1)
        in_mult = (1,) + tuple(c.encoder_ch_mult)
        res = c.resolution
        self.down = nn.ModuleList()
        block_in = c.ch
        for i, mult in enumerate(c.encoder_ch_mult):
            block_in, block_out = c.ch * in_mult[i], c.ch * mult
            blocks, attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.encoder_num_res_blocks[i]):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in c.attn_resolutions:
                    attn.append(AttnBlock(block_in))
            level = _level(blocks, attn)
            if i != len(c.encoder_ch_mult) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, c.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_mid(self.mid, h)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class Decoder(nn.Module):
    """Quantised latents (B, z, h, w) → pixels (B, 3, h·f, w·f), roughly in [−1, 1]."""

    def __init__(self, c: MagvitV2Config):
        super().__init__()
        n = len(c.decoder_ch_mult)
        block_in = c.ch * c.decoder_ch_mult[-1]
        res = c.resolution // 2 ** (n - 1)
        self.post_quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 1)
        self.conv_in = nn.Conv2d(c.z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        levels: list[nn.Module] = []
        for i in reversed(range(n)):
            block_out = c.ch * c.decoder_ch_mult[i]
            blocks, attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.decoder_num_res_blocks[i]):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in c.attn_resolutions:
                    attn.append(AttnBlock(block_in))
            level = _level(blocks, attn)
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)  # `up[i]` is level i (finest first), as in the released state dict
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, c.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(self.post_quant_conv(z))
        h = _run_mid(self.mid, h)
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LookupFreeQuantizer(nn.Module):
    """LFQ: every latent channel is one bit, q = sign(z) ∈ {−1, +1}^d; code = Σ_j 2**(d−1−j)·[z_j > 0] (MSB first).

    `embedding` (K, d) and `power_vals` (d,) are persistent buffers, as in the released state dict.
    """

    def __init__(self, codebook_dim: int):
        super().__init__()
        self.codebook_dim = codebook_dim
        self.codebook_size = 2**codebook_dim
        power_vals = 2 ** torch.arange(codebook_dim - 1, -1, -1)
        self.register_buffer("embedding", codes_to_bits(torch.arange(self.codebook_size), codebook_dim))
        self.register_buffer("power_vals", power_vals)

    def codes_to_latents(self, codes: Tensor, grid: tuple[int, int]) -> Tensor:
        """Codes (B, h·w), row-major → ±1 latents (B, d, h, w)."""
        b = codes.shape[0]
        h, w = grid
        if codes.shape[1] != h * w:
            raise ValueError(f"codes hold {codes.shape[1]} tokens per sample, the grid {grid} needs {h * w}")
        return self.embedding[codes.reshape(-1)].view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def latents_to_codes(self, z: Tensor) -> Tensor:
        """Continuous latents (B, d, h, w) → codes (B, h·w) of their signs (row-major)."""
        bits = (z > 0).long()
        codes = (bits * self.power_vals.view(1, -1, 1, 1)).sum(1)
        return codes.reshape(z.shape[0], -1)


def codes_to_bits(codes: Tensor, codebook_dim: int) -> Tensor:
    """Codes (...) → ±1 bit vectors (..., d), most significant bit first: 5 with d = 3 → (+1, −1, +1)."""
    shifts = torch.arange(codebook_dim - 1, -1, -1, device=codes.device)
    return ((codes.long().unsqueeze(-1) >> shifts) & 1).float() * 2 - 1


def bits_to_codes(bits: Tensor) -> Tensor:
    """±1 (or any signed) bit vectors (..., d) → codes (...): Σ_j 2**(d−1−j)·[b_j > 0]."""
    d = bits.shape[-1]
    powers = 2 ** torch.arange(d - 1, -1, -1, device=bits.device)
    return ((bits > 0).long() * powers).sum(-1)


class MagvitV2(nn.Module):
    """The tokenizer: `encoder`, `decoder`, `quantize` (names as in the released `showlab/magvitv2` state dict)."""

    def __init__(self, config: MagvitV2Config | None = None):
        super().__init__()
        self.config = config or MagvitV2Config()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = LookupFreeQuantizer(self.config.z_channels)

    @property
    def codebook_size(self) -> int:
        return self.quantize.codebook_size

    def decode_codes(self, codes: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        """Codes (B, N) in [0, K) → decoder output (B, 3, h·f, w·f), nominally in [−1, 1]; square grid by default."""
        if grid is None:
            side = int(round(codes.shape[1] ** 0.5))
            grid = (side, side)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}); got [{int(codes.min())}, {int(codes.max())}]")
        z = self.quantize.codes_to_latents(codes, grid).to(self.decoder.conv_in.weight.dtype)
        return self.decoder(z)

    def encode_codes(self, pixels: Tensor) -> Tensor:
        """Images (B, 3, H, W) normalised to [−1, 1] → codes (B, (H/f)·(W/f)), row-major."""
        return self.quantize.latents_to_codes(self.encoder(pixels))

    def save_pretrained(self, directory: str | Path, *, weights_name: str = "pytorch_model.safetensors") -> Path:
        """Write `config.json` (our sizes, plus Show-o's `_class_name`) and the state dict under `weights_name`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **self.config.to_dict()}, indent=2))
        save_state_dict(self.state_dict(), out / weights_name)
        return out


def read_config_json(directory: str | Path, release: str) -> tuple[Path, dict]:
    """(path, parsed) of `directory`/config.json of a local copy of `release`; FileNotFoundError naming the fix."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"directory {d} does not exist: download {release} into it")
    path = d / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: download {release} (config.json and weights) into {d}")
    return path, json.loads(path.read_text())


def find_weights(directory: Path, what: str) -> Path:
    """The first of `WEIGHT_NAMES` present in `directory`, or a FileNotFoundError naming all of them and the fix."""
    for name in WEIGHT_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"no weights in {directory}: expected one of {', '.join(WEIGHT_NAMES)}. "
        f"Download {what} into this directory (config.json and the weights file)."
    )


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors or a pickled .bin file (the latter with `weights_only=True`)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def save_state_dict(state: dict[str, Tensor], path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


def load_magvitv2(vq_dir: str | Path, config: MagvitV2Config | None = None) -> MagvitV2:
    """Load the released `showlab/magvitv2` layout from a local directory (config.json + weights, `WEIGHT_NAMES`).

    Sizes come from `config`, else from our keys in config.json when present, else the release defaults; the state
    dict must match exactly (`strict=True`), so a size mismatch fails loudly with the offending keys.
    """
    d = Path(vq_dir)
    _, raw = read_config_json(d, "showlab/magvitv2")
    if config is None:
        config = MagvitV2Config.from_dict(raw)
    model = MagvitV2(config)
    state = load_state_dict_file(find_weights(d, "showlab/magvitv2"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{d}: weights do not match MagvitV2Config {config}: {e}") from e
    return model.eval().requires_grad_(False)
