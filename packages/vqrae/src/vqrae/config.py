"""VQRAE's config: one validated dataclass tree and its presets (card §2–§4, §7).

    cfg = load_config(VQRAEConfig, preset="tiny", overrides=["quantizer.dim=256"])   # ConfigError names a bad field

Sections: ``data`` (images), ``encoder`` (the semantic encoder and its input normalisation), ``quantizer``
(SimVQ or plain VQ), ``decoder`` (a mirror of the encoder unless overridden), ``loss`` (pixel, perceptual, GAN,
distillation weights), ``train`` (two stages: optimiser, schedules, EMA), ``eval`` and ``run``.

Presets:

* ``tiny``                (default) shapes-world renders at 32 px, the committed tiny ViT tagger as the "pretrained"
                          encoder (``assets/vqrae_encoder``, width 64, patch 4 → 8×8 tokens), SimVQ 1024 × 96,
                          stage 1 then stage 2 on CPU in a few minutes (ours, card §7).
* ``siglip2-so400m-256``  SigLIP2-so400m/16 at 256 px from a local folder, SimVQ 16,384 × 1536, Table 7's
                          hyperparameters (batch 1024, 100k + 70k steps, lr 4e-4→1e-4 then 1e-4→1e-5, encoder 1e-5,
                          ConvNeXt-S perceptual 1.1, GAN 0.1 from 50k, distillation 1.0, bf16). Needs
                          ``encoder.path``, ``data.path`` and ``loss.perceptual_weights``.
* ``dinov2-b-reg``        DINOv2-B with registers at 224 px (RAE's encoder: CLS + registers dropped, last LayerNorm
                          made non-affine) with the same quantizer and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.training import (
    Config,
    RunFolderConfig,
    config_field,
    register_preset,
    require,
    require_in,
    require_int,
    require_non_negative,
    require_positive,
    require_range,
)

__all__ = ["DataConfig", "DecoderConfig", "EncoderConfig", "EvalConfig", "LossConfig", "QuantizerConfig",
           "RunConfig", "TrainConfig", "VQRAEConfig"]

SOURCES = ("shapes", "digits", "folder")
ENCODER_KINDS = ("tiny_vit", "siglip", "siglip2", "dinov2", "timm", "remote")
QUANTIZER_KINDS = ("simvq", "vq")
PERCEPTUAL_KINDS = ("none", "features", "timm", "lpips")
PRECISIONS = ("no", "fp16", "bf16")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class DataConfig(Config):
    source: str = config_field("shapes", "shapes (rendered shapes-world scenes) | digits (scikit-learn's bundled "
                               "8×8 digits, upsampled) | folder (your images under data.path)")
    path: str = config_field("", "image folder for source=folder (png/jpg, searched recursively)")
    image_size: int = config_field(32, "training and evaluation resolution (a multiple of the encoder's patch)")
    train_size: int = config_field(4000, "training images (shapes: rendered once, seeded by data.seed; folder: "
                                   "at most this many)")
    test_size: int = config_field(500, "held-out images (shapes: other seeds than training)")
    seed: int = config_field(0, "seed of the rendered sets")
    crop_pad: int = config_field(2, "random-crop augmentation: reflect-pad by this many pixels, crop back (0 = off)")
    flip: bool = config_field(True, "random horizontal flips (the paper's augmentation is random crop + flip)")

    def validate(self) -> None:
        require_in(self, "source", SOURCES)
        require(self, "path", self.source != "folder" or bool(self.path), "is empty while data.source=folder",
                "set {field} to your image folder, e.g. --set {field}=/data/imagenet/train")
        require_int(self, "image_size", 8)
        require_int(self, "train_size", 2)
        require_int(self, "test_size", 1)
        require_int(self, "seed", 0)
        require_int(self, "crop_pad", 0)


@dataclass
class EncoderConfig(Config):
    kind: str = config_field("tiny_vit", "tiny_vit (ours) | siglip | siglip2 | dinov2 (with or without registers) | "
                             "timm | remote (e.g. InternViT; needs encoder.trust_remote_code=true)")
    path: str = config_field("assets/vqrae_encoder", "local folder of the encoder (save_pretrained / our format)")
    mean: list[float] = config_field(default_factory=lambda: [0.5, 0.5, 0.5],
                                     help="per-channel input mean (set here, never fetched from a processor)")
    std: list[float] = config_field(default_factory=lambda: [0.5, 0.5, 0.5], help="per-channel input std")
    trust_remote_code: bool = config_field(False, "allow encoder.kind=remote to run the modelling code in "
                                           "encoder.path (InternViT ships its own)")
    non_affine_last_norm: bool = config_field(False, "make the encoder's last LayerNorm non-affine (RAE's DINOv2)")

    def validate(self) -> None:
        require_in(self, "kind", ENCODER_KINDS)
        require(self, "path", bool(self.path), "is empty", "set {field} to the encoder's local folder")
        require(self, "mean", len(self.mean) == 3, "needs 3 values", "e.g. --set {field}=0.5,0.5,0.5")
        require(self, "std", len(self.std) == 3 and min(self.std) > 0, "needs 3 positive values",
                "e.g. --set {field}=0.5,0.5,0.5")
        require(self, "trust_remote_code", self.kind != "remote" or self.trust_remote_code,
                "is false while encoder.kind=remote", "set {field}=true if you trust the code in encoder.path")


@dataclass
class QuantizerConfig(Config):
    kind: str = config_field("simvq", "simvq (frozen Gaussian codebook through a learned linear map; the paper's) | "
                             "vq (learned codebook; the baseline)")
    codebook_size: int = config_field(1024, "k, number of codes (the paper: 16,384)")
    dim: int = config_field(96, "e, codebook dimension (the paper: 1536 ≥ the encoder width 1152)")
    beta: float = config_field(0.25, "commitment weight β of L_quant = ‖sg(Ẑ)−Z_q‖² + β‖Ẑ−sg(Z_q)‖²")
    rotation_trick: bool = config_field(False, "rotation-trick gradients instead of the plain straight-through")
    ema_decay: float = config_field(0.0, "vq only: EMA codebook updates with this decay (0 = learned by gradient)")
    dead_code_threshold: float = config_field(0.0, "vq only: restart codes whose EMA usage is below this (0 = off)")

    def validate(self) -> None:
        require_in(self, "kind", QUANTIZER_KINDS)
        require_int(self, "codebook_size", 2)
        require_int(self, "dim", 1)
        require_non_negative(self, "beta")
        require_range(self, "ema_decay", 0.0, 1.0, high_inclusive=False)
        require_non_negative(self, "dead_code_threshold")
        require(self, "ema_decay", self.kind == "vq" or self.ema_decay == 0, "only applies to quantizer.kind=vq",
                "set {field}=0 or quantizer.kind=vq")
        require(self, "dead_code_threshold", self.kind == "vq" or self.dead_code_threshold == 0,
                "only applies to quantizer.kind=vq", "set {field}=0 or quantizer.kind=vq")
        require(self, "dead_code_threshold", self.dead_code_threshold == 0 or self.ema_decay > 0,
                "needs EMA usage statistics (quantizer.ema_decay > 0)", "set quantizer.ema_decay=0.99 or {field}=0")


@dataclass
class DecoderConfig(Config):
    depth: int = config_field(0, "transformer blocks (0 = the encoder's depth: a mirror)")
    width: int = config_field(0, "token width (0 = the encoder's width)")
    heads: int = config_field(0, "attention heads (0 = the encoder's)")
    mlp_dim: int = config_field(0, "MLP hidden width (0 = the encoder's)")
    noise_tau: float = config_field(0.0, "RAE's decoder-input noise z + σε, σ ~ U(0, τ) in training (0 = off)")

    def validate(self) -> None:
        for name in ("depth", "width", "heads", "mlp_dim"):
            require_int(self, name, 0)
        require_non_negative(self, "noise_tau")


@dataclass
class LossConfig(Config):
    l2: float = config_field(1.0, "pixel ℓ2 weight")
    l1: float = config_field(0.0, "pixel ℓ1 weight")
    perceptual: str = config_field("features", "none | features (LPIPS-style distance on the frozen initial "
                                   "encoder's block outputs; offline) | timm (e.g. ConvNeXt-S from a local weights "
                                   "file) | lpips (the lpips package; its backbone weights must be cached)")
    perceptual_weight: float = config_field(0.1, "weight of the perceptual term (the paper: 1.1 with ConvNeXt-S)")
    perceptual_model: str = config_field("convnext_small", "timm model name for perceptual=timm; net (vgg|alex) "
                                         "for perceptual=lpips")
    perceptual_weights: str = config_field("", "local weights file for perceptual=timm")
    gan_weight: float = config_field(0.0, "hinge PatchGAN weight λ_G, times the adaptive weight (0 = off; the "
                                     "paper: 0.1 in stage 2)")
    gan_start: int = config_field(0, "global step at which the GAN term starts (the paper: 50k for SigLIP2)")
    disc_lr: float = config_field(4e-5, "discriminator learning rate")
    distill_weight: float = config_field(1.0, "stage-2 self-distillation λ_d‖Z_I − T(X)‖² to the frozen initial "
                                         "encoder (0 = off)")

    def validate(self) -> None:
        for name in ("l2", "l1", "perceptual_weight", "gan_weight", "distill_weight"):
            require_non_negative(self, name)
        require(self, "l2", self.l2 + self.l1 > 0, "and loss.l1 are both 0", "set {field}=1")
        require_in(self, "perceptual", PERCEPTUAL_KINDS)
        require_int(self, "gan_start", 0)
        require_positive(self, "disc_lr")


@dataclass
class TrainConfig(Config):
    stage1_steps: int = config_field(1500, "stage 1: encoder frozen; projections, codebook map and decoder trained")
    stage2_steps: int = config_field(500, "stage 2: encoder unfrozen at train.encoder_lr, with self-distillation "
                                     "(0 = stage 1 only)")
    batch_size: int = config_field(64, "images per step over all processes")
    lr1: float = config_field(4e-4, "stage-1 peak lr (after warm-up), cosine to train.lr1_min")
    lr1_min: float = config_field(1e-4, "stage-1 final lr")
    lr2: float = config_field(1e-4, "stage-2 lr of everything but the encoder, cosine to train.lr2_min")
    lr2_min: float = config_field(1e-5, "stage-2 final lr")
    encoder_lr: float = config_field(1e-5, "stage-2 encoder lr (constant)")
    quantizer_lr_mult: float = config_field(10.0, "lr of the codebook map (SimVQ's W, or VQ's codes) relative to "
                                            "the rest (no weight decay on it)")
    warmup: int = config_field(100, "linear warm-up steps at the start of each stage")
    weight_decay: float = config_field(1e-4, "AdamW weight decay")
    betas: list[float] = config_field(default_factory=lambda: [0.9, 0.999], help="AdamW betas")
    max_grad_norm: float = config_field(1.0, "gradient clipping (0 = off)")
    ema_decay: float = config_field(0.995, "EMA of the weights used for evaluation and export (0 = off)")
    mixed_precision: str = config_field("no", "autocast on GPU: no | fp16 | bf16")
    seed: int = config_field(0, "seed of initialisation, batches, augmentation")

    def validate(self) -> None:
        require_int(self, "stage1_steps", 0)
        require_int(self, "stage2_steps", 0)
        require(self, "stage1_steps", self.stage1_steps + self.stage2_steps > 0, "and train.stage2_steps are 0",
                "train at least one step")
        require_int(self, "batch_size", 1)
        for name in ("lr1", "lr2", "encoder_lr"):
            require_positive(self, name)
        for name in ("lr1_min", "lr2_min", "weight_decay", "max_grad_norm"):
            require_non_negative(self, name)
        require_positive(self, "quantizer_lr_mult")
        require_int(self, "warmup", 0)
        require(self, "betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "needs two values "
                "in [0, 1)", "e.g. --set {field}=0.9,0.999")
        require_range(self, "ema_decay", 0.0, 1.0, high_inclusive=False)
        require_in(self, "mixed_precision", PRECISIONS)
        require_int(self, "seed", 0)


@dataclass
class EvalConfig(Config):
    probe_train: int = config_field(1000, "linear probe: single-object training images (shapes world, 18 classes)")
    probe_test: int = config_field(500, "linear probe: held-out images")
    grid: int = config_field(16, "images in the original-vs-reconstruction grid")
    batch_size: int = config_field(100, "evaluation batch")

    def validate(self) -> None:
        require_int(self, "probe_train", 0)
        require_int(self, "probe_test", 0)
        require_int(self, "grid", 0)
        require_int(self, "batch_size", 1)


@dataclass
class RunConfig(RunFolderConfig):
    dir: str = config_field("outputs/vqrae_tiny", "run folder (config, metrics.jsonl, checkpoints, eval, plots)")
    save_every: int = config_field(500, "checkpoint every N steps (and at the end; 0 = only at the end)")
    log_every: int = config_field(25, "log averaged metrics every N steps")
    evaluate: bool = config_field(True, "evaluate on the held-out images after training")
    threads: int = config_field(2, "torch CPU threads (0 = torch's default)")
    cpu: bool = config_field(False, "force CPU even when a GPU is present")

    def validate(self) -> None:
        super().validate()
        require_int(self, "log_every", 1)
        require_int(self, "threads", 0)


@dataclass
class VQRAEConfig(Config):
    """Train a VQ representation autoencoder in two stages (stage 1: encoder frozen; stage 2: encoder unfrozen with
    self-distillation), then evaluate reconstruction (PSNR, SSIM, Fréchet distance on encoder features), codebook
    utilisation and the linear probe of the continuous features."""

    data: DataConfig = config_field(default_factory=DataConfig, help="images")
    encoder: EncoderConfig = config_field(default_factory=EncoderConfig, help="the semantic encoder")
    quantizer: QuantizerConfig = config_field(default_factory=QuantizerConfig, help="the codebook")
    decoder: DecoderConfig = config_field(default_factory=DecoderConfig, help="the ViT decoder")
    loss: LossConfig = config_field(default_factory=LossConfig, help="loss weights")
    train: TrainConfig = config_field(default_factory=TrainConfig, help="optimisation, two stages")
    eval: EvalConfig = config_field(default_factory=EvalConfig, help="evaluation")
    run: RunConfig = config_field(default_factory=RunConfig, help="outputs")

    def validate(self) -> None:
        require(self, "loss.perceptual_weights", self.loss.perceptual != "timm" or bool(self.loss.perceptual_weights),
                "is empty while loss.perceptual=timm (no weights can be downloaded)",
                "point {field} at the model's weights file, or set loss.perceptual=features|none")


def _paper(encoder: EncoderConfig, image_size: int, run_dir: str) -> VQRAEConfig:
    """Table 7's hyperparameters around a given encoder (card §4)."""
    return VQRAEConfig(
        data=DataConfig(source="folder", image_size=image_size, train_size=10**9, test_size=50_000, crop_pad=0),
        encoder=encoder,
        quantizer=QuantizerConfig(kind="simvq", codebook_size=16_384, dim=1536, beta=0.25),
        loss=LossConfig(l2=1.0, perceptual="timm", perceptual_model="convnext_small", perceptual_weight=1.1,
                        gan_weight=0.1, gan_start=50_000 + 100_000, disc_lr=4e-5, distill_weight=1.0),
        train=TrainConfig(stage1_steps=100_000, stage2_steps=70_000, batch_size=1024, lr1=4e-4, lr1_min=1e-4,
                          lr2=1e-4, lr2_min=1e-5, encoder_lr=1e-5, warmup=2000, weight_decay=1e-4,
                          max_grad_norm=1.0, ema_decay=0.9999, mixed_precision="bf16", quantizer_lr_mult=1.0),
        eval=EvalConfig(probe_train=0, probe_test=0, grid=16, batch_size=64),
        run=RunConfig(dir=run_dir, save_every=5000, log_every=100, threads=0),
    )


@register_preset(VQRAEConfig)
def tiny() -> VQRAEConfig:
    """Shapes world at 32 px with the committed tiny ViT tagger as the encoder, SimVQ 1024 × 96, 1500 + 500 steps of
    batch 64 on CPU (minutes)."""
    return VQRAEConfig()


@register_preset(VQRAEConfig, "siglip2-so400m-256")
def siglip2_so400m_256() -> VQRAEConfig:
    """SigLIP2-so400m/16, 256 px (16×16 tokens, width 1152), Table 7 (GAN from stage-2 step 50k)."""
    cfg = _paper(EncoderConfig(kind="siglip", path="", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]), 256,
                 "outputs/vqrae_siglip2_so400m_256")
    return cfg


@register_preset(VQRAEConfig, "dinov2-b-reg")
def dinov2_b_reg() -> VQRAEConfig:
    """DINOv2-B with 4 registers, 224 px (16×16 tokens of patch 14, width 768), RAE's encoder treatment, Table 7's
    schedule (the paper does not train this pairing; GAN start as for InternViT, stage-2 step 30k)."""
    cfg = _paper(EncoderConfig(kind="dinov2", path="", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                               non_affine_last_norm=True), 224, "outputs/vqrae_dinov2_b_reg")
    cfg.loss.gan_start = 100_000 + 30_000
    return cfg
