"""Tiny diffusers pipelines built offline, for tests, demos and the shapes-world base.

Every component is constructed from a small config; the tokenizer is trained on the spot
(``tokenizers`` BPE, a fraction of a second). No hub id is used anywhere, so this works with
``HF_HUB_OFFLINE=1``. The configs follow the dimension rules of the diffusers pipelines
(shared_core.md §12):

- SD3 concatenates the hidden states of two CLIP text encoders (their widths must sum to at most
  ``joint_attention_dim``; the pipeline zero-pads) and their projections (which must sum to
  ``pooled_projection_dim``); T5's ``d_model`` equals ``joint_attention_dim`` (zeros without T5).
- Flux uses CLIP's pooled output (hidden = ``pooled_projection_dim``), T5 ``d_model`` =
  ``joint_attention_dim`` and ``in_channels`` = 4 × VAE latent channels (2×2 packing);
  ``axes_dims_rope`` sums to the head dim.
- SD 1.x: the UNet cross-attends to CLIP's last hidden state (``cross_attention_dim`` = CLIP width), its
  ``in_channels`` are the VAE latent channels (4), and the scheduler is SD 1.x's DDIM configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Words the tiny tokenizer is trained on: the shapes-world phrasing plus a little general text.
DEFAULT_CORPUS: tuple[str, ...] = (
    "a photo of a red circle",
    "a photo of a green square and a blue triangle",
    "a photo of two yellow circles",
    "a photo of three purple squares",
    "a photo of four orange triangles",
    "a photo of a circle left of a square",
    "a photo of a triangle right of a circle",
    "a photo of a square above a triangle",
    "a photo of a circle below a square",
    "a photo of one shape on a white background",
    "an image of a cat and a dog in the park",
    "what is the colour of the object? how many shapes are there? answer: yes no",
)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


def tiny_tokenizer(
    corpus: tuple[str, ...] | list[str] = DEFAULT_CORPUS,
    *,
    vocab_size: int = 200,
    model_max_length: int = 16,
):
    """Train a small BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    It appends ``</s>`` to every sequence (CLIP pools at the EOS token) and pads with ``<pad>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    eos_id = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=model_max_length,
    )


def _clip_text(tokenizer, *, hidden: int, projection: int | None, layers: int = 2, heads: int = 2, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection is not None else CLIPTextModel
    return cls(cfg).eval()


def _t5(tokenizer, *, d_model: int, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=2 * d_model,
        d_kv=d_model // 2,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(cfg).eval()


def tiny_vae(
    *,
    block_out_channels: tuple[int, ...] = (32, 64),
    latent_channels: int = 16,
    sample_size: int = 32,
    scaling_factor: float = 1.5305,
    shift_factor: float | None = 0.0609,
    seed: int = 0,
):
    """A small ``AutoencoderKL``; spatial factor 2**(len(block_out_channels) - 1)."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(32, block_out_channels[0]),
        sample_size=sample_size,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


@dataclass
class TinySD3Config:
    """Sizes of a tiny ``StableDiffusion3Pipeline`` (defaults: shared_core.md §12, ≈0.3M transformer)."""

    image_size: int = 32
    vae_channels: tuple[int, ...] | None = (32, 64)  # None: pixel space (no VAE, 3 channels)
    latent_channels: int = 16
    patch_size: int = 2
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 32
    joint_attention_dim: int = 64
    clip_hidden: int = 32
    with_t5: bool = True
    shift: float = 3.0
    max_length: int = 16
    corpus: tuple[str, ...] = field(default_factory=lambda: DEFAULT_CORPUS)


def tiny_sd3_pipeline(config: TinySD3Config | None = None, *, seed: int = 0):
    """Build a randomly initialised tiny ``StableDiffusion3Pipeline`` (no downloads)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    c = config or TinySD3Config()
    pixel_space = c.vae_channels is None
    factor = 1 if pixel_space else 2 ** (len(c.vae_channels) - 1)
    channels = 3 if pixel_space else c.latent_channels
    latent_size = c.image_size // factor
    tokenizer = tiny_tokenizer(c.corpus, model_max_length=c.max_length)
    te1 = _clip_text(tokenizer, hidden=c.clip_hidden, projection=c.clip_hidden, seed=seed + 1)
    te2 = _clip_text(tokenizer, hidden=c.clip_hidden, projection=c.clip_hidden, seed=seed + 2)
    te3 = _t5(tokenizer, d_model=c.joint_attention_dim, seed=seed + 3) if c.with_t5 else None
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=c.patch_size,
        in_channels=channels,
        out_channels=channels,
        num_layers=c.num_layers,
        attention_head_dim=c.head_dim,
        num_attention_heads=c.num_heads,
        joint_attention_dim=c.joint_attention_dim,
        caption_projection_dim=c.num_heads * c.head_dim,
        pooled_projection_dim=2 * c.clip_hidden,
        pos_embed_max_size=latent_size // c.patch_size * 2,
    )
    vae = None
    if not pixel_space:
        vae = tiny_vae(block_out_channels=c.vae_channels, latent_channels=c.latent_channels, sample_size=c.image_size, seed=seed + 4)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=c.shift),
        vae=vae,
        text_encoder=te1,
        tokenizer=tokenizer,
        text_encoder_2=te2,
        tokenizer_2=tokenizer,
        text_encoder_3=te3,
        tokenizer_3=tokenizer if te3 is not None else None,
    )


@dataclass
class TinyFluxConfig:
    """Sizes of a tiny ``FluxPipeline`` (defaults: shared_core.md §12, ≈0.26M transformer)."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (32, 64)
    latent_channels: int = 16
    num_layers: int = 1
    num_single_layers: int = 1
    num_heads: int = 2
    head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    joint_attention_dim: int = 64
    pooled_projection_dim: int = 64
    guidance_embeds: bool = False
    max_length: int = 16
    corpus: tuple[str, ...] = field(default_factory=lambda: DEFAULT_CORPUS)


def tiny_flux_pipeline(config: TinyFluxConfig | None = None, *, seed: int = 0):
    """Build a randomly initialised tiny ``FluxPipeline`` (no downloads)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    c = config or TinyFluxConfig()
    if sum(c.axes_dims_rope) != c.head_dim:
        raise ValueError(f"axes_dims_rope {c.axes_dims_rope} must sum to head_dim={c.head_dim}")
    tokenizer = tiny_tokenizer(c.corpus, model_max_length=c.max_length)
    te1 = _clip_text(tokenizer, hidden=c.pooled_projection_dim, projection=None, seed=seed + 1)
    te2 = _t5(tokenizer, d_model=c.joint_attention_dim, seed=seed + 2)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * c.latent_channels,
        num_layers=c.num_layers,
        num_single_layers=c.num_single_layers,
        attention_head_dim=c.head_dim,
        num_attention_heads=c.num_heads,
        joint_attention_dim=c.joint_attention_dim,
        pooled_projection_dim=c.pooled_projection_dim,
        guidance_embeds=c.guidance_embeds,
        axes_dims_rope=tuple(c.axes_dims_rope),
    )
    vae = tiny_vae(block_out_channels=c.vae_channels, latent_channels=c.latent_channels, sample_size=c.image_size, seed=seed + 4)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=te1,
        tokenizer=tokenizer,
        text_encoder_2=te2,
        tokenizer_2=tokenizer,
    )


#: SD 1.x's noise schedule as a ``DDIMScheduler`` config (the v1-4 / v1-5 scheduler_config.json values; DDPO
#: builds its DDIM sampler with ``DDIMScheduler.from_config`` of it).
SD1_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


@dataclass
class TinySD1Config:
    """Sizes of a tiny ``StableDiffusionPipeline`` (SD 1.x layout: UNet with cross-attention, 4-channel VAE)."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (32, 64)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    norm_num_groups: int = 8
    attention_heads: int = 2  # UNet2DConditionModel's `attention_head_dim` is a head count (SD 1.x: 8)
    clip_hidden: int = 32
    max_length: int = 16
    corpus: tuple[str, ...] = field(default_factory=lambda: DEFAULT_CORPUS)


def tiny_sd1_pipeline(config: TinySD1Config | None = None, *, seed: int = 0):
    """Build a randomly initialised tiny ``StableDiffusionPipeline`` with SD 1.x's DDIM scheduler (no downloads).

    The first UNet block cross-attends (``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D``), the last does not; there
    is no safety checker or feature extractor (saved as null, loaded as None).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    c = config or TinySD1Config()
    n = len(c.unet_channels)
    latent_size = c.image_size // 2 ** (len(c.vae_channels) - 1)
    tokenizer = tiny_tokenizer(c.corpus, model_max_length=c.max_length)
    text_encoder = _clip_text(tokenizer, hidden=c.clip_hidden, projection=None, seed=seed + 1)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=c.latent_channels,
        out_channels=c.latent_channels,
        layers_per_block=1,
        block_out_channels=tuple(c.unet_channels),
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (n - 1),
        up_block_types=("UpBlock2D",) * (n - 1) + ("CrossAttnUpBlock2D",),
        cross_attention_dim=c.clip_hidden,
        attention_head_dim=c.attention_heads,
        norm_num_groups=c.norm_num_groups,
    )
    vae = tiny_vae(block_out_channels=c.vae_channels, latent_channels=c.latent_channels, sample_size=c.image_size,
                   scaling_factor=0.18215, shift_factor=None, seed=seed + 4)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=DDIMScheduler(**SD1_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
