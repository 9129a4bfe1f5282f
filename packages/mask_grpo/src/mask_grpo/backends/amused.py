"""diffusers' aMUSEd behind `mask_grpo.policy.MaskedPolicy` (mask_grpo.md §9).

aMUSEd = `VQModel` (VQ-GAN tokenizer) + `UVit2DModel` (U-ViT over the token grid, logits over the codebook) +
`CLIPTextModelWithProjection` + a CLIP tokenizer + `AmusedScheduler(mask_token_id, masking_schedule)`, wired as
`AmusedPipeline.__call__` wires them [diffusers 0.42.1: `pipelines/deprecated/amused/pipeline_amused.py`]:

- conditioning: the prompt is tokenised to `tokenizer.model_max_length` (padding "max_length", truncation); the text
  encoder's penultimate hidden states `hidden_states[-2]` go to cross-attention and its pooled projection
  `text_embeds` to the pooled path, with micro-conditioning (width, height, crop_0, crop_1, aesthetic score) as one
  (B, 5) tensor in the text dtype (width first: the pipeline notes the flipped order is the original code's);
- CFG negative: the empty prompt "" (when no negative prompt is given), batched [uncond, cond];
- resolution: height = width = transformer `sample_size`·f by default, f = 2^(len(vqvae block_out_channels) − 1)
  (the pipeline's `vae_scale_factor`); the token grid is (height // f, width // f);
- decode: `vqvae.decode(tokens, force_not_quantize=True, shape=(B, h, w, latent_channels))` (a codebook lookup when
  `lookup_from_codebook`), `.sample.clip(0, 1)`, upcast to float32 first for an fp16 `force_upcast` VQ model.

`logits` returns the transformer's (B, K, h, w) output viewed as (B, N, K) exactly as `AmusedScheduler.step` does
(`reshape(B, K, h·w).permute(0, 2, 1)` [`schedulers/scheduling_amused.py`]), so our sampler with
`temperature="amused"` reproduces the pipeline's tokens for a seeded generator (`pipeline_sampler_config`; tested
in tests/test_amused_backend.py, float32).

diffusers marks `AmusedPipeline` deprecated (`_last_supported_version = "0.33.1"`; it still ships in 0.42.1, card
§9). Every diffusers import here is lazy, so this module imports even on a diffusers without aMUSEd; using it then
raises `ImportError` naming the versions that have it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mask_grpo.policy import Cond
from mask_grpo.sampler import SamplerConfig

#: The subfolders of a diffusers aMUSEd checkpoint (`model_index.json` of `AmusedPipeline.save_pretrained`).
SUBFOLDERS = ("transformer", "vqvae", "text_encoder", "tokenizer", "scheduler")

_IMPORT_FIX = (
    "aMUSEd (UVit2DModel, VQModel, AmusedScheduler, AmusedPipeline) ships in diffusers 0.25 through at least 0.42.1 "
    "(deprecated, last supported 0.33.1, still importable in 0.42.x); fix: pip install 'diffusers>=0.25,<=0.42.1'"
)


def _diffusers_amused() -> dict[str, Any]:
    """The diffusers aMUSEd classes, imported on first use (module doc: lazy import)."""
    try:
        from diffusers import AmusedScheduler, UVit2DModel, VQModel
    except ImportError as err:  # a diffusers that dropped aMUSEd, or none at all
        raise ImportError(f"this diffusers has no aMUSEd models ({err}). {_IMPORT_FIX}") from err
    return {"UVit2DModel": UVit2DModel, "VQModel": VQModel, "AmusedScheduler": AmusedScheduler}


def _amused_pipeline_class() -> type:
    """`AmusedPipeline` (under `pipelines/deprecated/amused/` in diffusers 0.42.1), imported on first use."""
    try:
        from diffusers import AmusedPipeline
    except ImportError as err:
        raise ImportError(f"this diffusers has no AmusedPipeline ({err}). {_IMPORT_FIX}") from err
    return AmusedPipeline


def pipeline_sampler_config(steps: int = 12, guidance_scale: float = 10.0,
                            temperature: float | tuple[float, float] = (2.0, 0.0),
                            masking_schedule: str = "cosine") -> SamplerConfig:
    """Our `SamplerConfig` for `AmusedPipeline(num_inference_steps=steps, guidance_scale=..., temperature=...)` with
    the scheduler's `masking_schedule`: the pipeline guides only when `guidance_scale > 1` (else `cfg_scale=1`, off);
    its temperature is `AmusedScheduler.set_timesteps`' linspace (`schedules.choice_temperatures`, form "amused")."""
    pair = isinstance(temperature, (tuple, list))
    amused_range = tuple(float(x) for x in temperature) if pair else float(temperature)
    return SamplerConfig(steps=steps, schedule=masking_schedule, temperature="amused", amused_range=amused_range,
                         cfg_scale=float(guidance_scale) if guidance_scale > 1.0 else 1.0)


class AmusedPolicy(nn.Module):
    """aMUSEd as a `MaskedPolicy` (module doc). `height`/`width` are pixels (default: the pipeline's
    `transformer.config.sample_size · f`); `crop_coord` and `aesthetic_score` are the pipeline's
    `micro_conditioning_*` arguments (defaults (0, 0) and 6). Only the transformer is trained (`trainable`)."""

    def __init__(self, transformer: nn.Module, vqvae: nn.Module, text_encoder: nn.Module, tokenizer: Any,
                 mask_id: int, *, masking_schedule: str = "cosine", height: int | None = None,
                 width: int | None = None, crop_coord: tuple[int, int] = (0, 0), aesthetic_score: float = 6.0):
        super().__init__()
        self.transformer, self.vqvae, self.text_encoder, self.tokenizer = transformer, vqvae, text_encoder, tokenizer
        self.mask_id = int(mask_id)
        self.masking_schedule = masking_schedule
        self.codebook_size = int(transformer.config.codebook_size)
        self.scale_factor = 2 ** (len(vqvae.config.block_out_channels) - 1)  # the pipeline's vae_scale_factor
        default = int(transformer.config.sample_size) * self.scale_factor
        self.height, self.width = int(height or default), int(width or default)
        for name, size in (("height", self.height), ("width", self.width)):
            if size % self.scale_factor:
                raise ValueError(f"{name}={size} is not a multiple of the VQ scale factor {self.scale_factor}; "
                                 f"fix: pass a multiple, e.g. {default}")
        self.grid = (self.height // self.scale_factor, self.width // self.scale_factor)
        self.crop_coord = (int(crop_coord[0]), int(crop_coord[1]))
        self.aesthetic_score = aesthetic_score
        if not 0 <= self.mask_id < int(transformer.config.vocab_size):
            raise ValueError(f"mask_id {self.mask_id} outside the transformer vocabulary "
                             f"[0, {transformer.config.vocab_size})")

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> AmusedPolicy:
        """Wrap the components of an `AmusedPipeline` (shared, not copied); `kwargs` as in `__init__`."""
        return cls(pipe.transformer, pipe.vqvae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config.mask_token_id,
                   masking_schedule=pipe.scheduler.config.masking_schedule, **kwargs)

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, *, variant: str | None = None,
                        **kwargs: Any) -> AmusedPolicy:
        """Load a local diffusers aMUSEd folder (`SUBFOLDERS`, as written by `AmusedPipeline.save_pretrained` or a
        snapshot of the released amused-256 / amused-512 checkpoints); no download is attempted. `dtype` casts the
        three models; `variant` picks weight files such as `*.fp16.safetensors` (the released folders ship "fp16");
        `kwargs` as in `__init__`. Pipeline-exact sampling is tested in float32 only: in fp16 the pipeline's
        scheduler takes the softmax in fp16, our sampler in float32."""
        root = Path(local_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"aMUSEd folder {root} does not exist; fix: pass a local diffusers aMUSEd "
                                    f"checkpoint folder with subfolders {', '.join(SUBFOLDERS)}")
        missing = [s for s in SUBFOLDERS if not (root / s).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"aMUSEd folder {root} lacks subfolder(s) {', '.join(m + '/' for m in missing)}; fix: use a complete "
                f"diffusers aMUSEd checkpoint ({', '.join(SUBFOLDERS)}), e.g. one written by "
                f"AmusedPipeline.save_pretrained or a full local snapshot of the released checkpoint")
        classes = _diffusers_amused()
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        transformer = classes["UVit2DModel"].from_pretrained(root / "transformer", torch_dtype=dtype, variant=variant)
        vqvae = classes["VQModel"].from_pretrained(root / "vqvae", torch_dtype=dtype, variant=variant)
        text_encoder = CLIPTextModelWithProjection.from_pretrained(root / "text_encoder", dtype=dtype,
                                                                   variant=variant)
        tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
        scheduler = classes["AmusedScheduler"].from_pretrained(root / "scheduler")
        policy = cls(transformer, vqvae, text_encoder, tokenizer, scheduler.config.mask_token_id,
                     masking_schedule=scheduler.config.masking_schedule, **kwargs)
        policy.eval()
        return policy.to(device) if device is not None else policy

    # ---- MaskedPolicy --------------------------------------------------------------------------------------------
    def sampler_config(self, steps: int = 12, guidance_scale: float = 10.0,
                       temperature: float | tuple[float, float] = (2.0, 0.0)) -> SamplerConfig:
        """`pipeline_sampler_config` with this model's scheduler `masking_schedule`."""
        return pipeline_sampler_config(steps, guidance_scale, temperature, self.masking_schedule)

    def micro_conds(self, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """(B, 5) = (width, height, crop_0, crop_1, aesthetic score) in `dtype`, as the pipeline builds it."""
        row = torch.tensor([self.width, self.height, *self.crop_coord, self.aesthetic_score], dtype=dtype,
                           device=device)
        return row.unsqueeze(0).expand(batch, -1).clone()

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Cond:
        """`encoder_hidden_states` = CLIP `hidden_states[-2]` (B, L, D), `pooled_text_emb` = `text_embeds` (B, P) and
        `micro_conds` (B, 5); the text encoder is frozen, so no graph is kept. `encode([""])` is the pipeline's
        default negative conditioning."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = self.tokenizer(list(prompts), return_tensors="pt", padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length).input_ids
        out = self.text_encoder(ids.to(self.text_encoder.device), return_dict=True, output_hidden_states=True)
        hidden = out.hidden_states[-2]
        return {"encoder_hidden_states": hidden, "pooled_text_emb": out.text_embeds,
                "micro_conds": self.micro_conds(hidden.shape[0], hidden.dtype, hidden.device)}

    def logits(self, tokens: Tensor, cond: Cond) -> Tensor:
        """(B, N, K) scores: the transformer's (B, K, h, w) output as `AmusedScheduler.step` views it."""
        b = tokens.shape[0]
        h, w = self.grid
        out = self.transformer(tokens.reshape(b, h, w), micro_conds=cond["micro_conds"],
                               pooled_text_emb=cond["pooled_text_emb"],
                               encoder_hidden_states=cond["encoder_hidden_states"])
        return out.reshape(b, self.codebook_size, h * w).permute(0, 2, 1)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1]: codebook lookup and VQ decoder (module doc), float32."""
        b = tokens.shape[0]
        h, w = self.grid
        if (tokens >= self.codebook_size).any() or (tokens < 0).any():
            raise ValueError(f"decode needs complete grids of codes in [0, {self.codebook_size}); "
                             f"found a mask ({self.mask_id}) or out-of-range id")
        vq = self.vqvae
        dtype = vq.dtype
        upcast = dtype == torch.float16 and getattr(vq.config, "force_upcast", False)
        if upcast:
            vq.float()
        try:
            out = vq.decode(tokens.view(b, h, w).to(vq.device), force_not_quantize=True,
                            shape=(b, h, w, vq.config.latent_channels)).sample.clip(0, 1)
        finally:
            if upcast:
                vq.to(dtype)
        return out.float()

    def trainable(self) -> nn.Module:
        """The `UVit2DModel`; the VQ model and the text encoder stay frozen."""
        return self.transformer


def tiny_amused_pipeline(seed: int = 0, *, grid: int = 4, max_length: int = 16) -> Any:
    """A randomly initialised tiny `AmusedPipeline`, built offline (no hub id), for tests and demos.

    Sizes follow diffusers' `tests/pipelines/amused/test_amused.py` (card §9): `UVit2DModel` hidden 8, vocab 32,
    codebook 8, in/block channels 8, 1 res block, 1 layer, 1 head, micro-cond dims 2/10, encoder hidden 8, cond
    embed 8, down/upsampling; `VQModel` one block of 8 channels, latent 8, 8 codes, `lookup_from_codebook=True`
    (f = 1); `AmusedScheduler(mask_token_id=31)`; CLIP text model hidden 8, 1 layer, 1 head, projection 8. Ours
    [our reading]: the transformer `sample_size` is `grid` (even, for the down/upsampling) so the default resolution
    is grid×grid; the tokenizer is `shared.tiny.tiny_tokenizer` (BPE trained on the spot, `max_length` tokens, EOS
    pooled by CLIP) instead of the hub's tiny CLIP tokenizer.
    """
    if grid < 2 or grid % 2:
        raise ValueError(f"grid={grid} must be even and >= 2 (the tiny U-ViT down- and upsamples by 2)")
    classes = _diffusers_amused()
    pipeline_cls = _amused_pipeline_class()
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from shared.tiny import tiny_tokenizer

    torch.manual_seed(seed)
    transformer = classes["UVit2DModel"](
        hidden_size=8, use_bias=False, hidden_dropout=0.0, cond_embed_dim=8, micro_cond_encode_dim=2,
        micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=32, codebook_size=8, in_channels=8,
        block_out_channels=8, num_res_blocks=1, downsample=True, upsample=True, block_num_heads=1,
        num_hidden_layers=1, num_attention_heads=1, attention_dropout=0.0, intermediate_size=8, layer_norm_eps=1e-6,
        ln_elementwise_affine=True, sample_size=grid,
    )
    torch.manual_seed(seed)
    vqvae = classes["VQModel"](
        act_fn="silu", block_out_channels=[8], down_block_types=["DownEncoderBlock2D"], in_channels=3,
        latent_channels=8, layers_per_block=1, norm_num_groups=8, num_vq_embeddings=8, out_channels=3,
        sample_size=8, up_block_types=["UpDecoderBlock2D"], mid_block_add_attention=False, lookup_from_codebook=True,
    )
    tokenizer = tiny_tokenizer(model_max_length=max_length)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=8, intermediate_size=8, num_attention_heads=1, num_hidden_layers=1,
        projection_dim=8, layer_norm_eps=1e-5, max_position_embeddings=max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = classes["AmusedScheduler"](mask_token_id=31)
    pipe = pipeline_cls(vqvae=vqvae.eval(), tokenizer=tokenizer, text_encoder=text_encoder.eval(),
                        transformer=transformer.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
