"""Two-stage VQRAE training, readable top to bottom (card §3, §4).

    train, test = load_data(cfg)                       # images; errors about data before any model is built
    model, teacher = build(cfg)                        # encoder + SimVQ + mirrored ViT decoder; frozen initial encoder
    for step in 1 .. S1 + S2:
        stage 1 (step ≤ S1): encoder frozen; projections, codebook map, decoder trained, lr1 warm-up + cosine
        stage 2:             encoder unfrozen at encoder_lr, the rest at lr2 (warm-up + cosine), + λ_d‖Z_I − T(X)‖²
        L = ℓ2(X, X′) [+ ℓ1] + w_P·L_P(X, X′) + L_quant [+ λ_d·L_distill] [+ λ_G·w_adapt·L_G]
        AdamW step (gradients averaged over processes), EMA; discriminator step when the GAN is on
    evaluate(...)                                      # PSNR, SSIM, FD, utilisation, linear probe (EMA weights)

Batches, augmentation and the decoder-input noise come from one seeded generator per process whose state is
checkpointed with the model, optimiser and EMA, so a resumed run continues with identical losses. Under
``accelerate launch`` each process takes batch_size / world images and averages gradients (shared.training).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.training import (
    EMA,
    MeanTracker,
    MetricsLogger,
    average_gradients,
    latest_checkpoint,
    load_checkpoint,
    plot_curves,
    progress,
    save_checkpoint,
    save_config,
)
from shared.training.distributed import world_size

from vqrae.config import VQRAEConfig
from vqrae.data import ImageSet, augment, load_images
from vqrae.decoder import DecoderSpec, ViTDecoder
from vqrae.discriminator import PatchDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss
from vqrae.encoders import EncoderSpec, build_encoder
from vqrae.evaluate import evaluate
from vqrae.losses import FeaturePerceptual, build_perceptual, distillation_loss, pixel_loss
from vqrae.model import VQRAE
from vqrae.quantizers import build_quantizer
from vqrae.usage import CodeUsage

__all__ = ["build", "load_data", "load_run", "lr_at", "train"]


def load_data(cfg: VQRAEConfig) -> tuple[ImageSet, ImageSet]:
    """(train, held-out) image sets of ``cfg.data``."""
    d = cfg.data
    kw = dict(seed=d.seed, image_size=d.image_size, path=d.path)
    return (load_images(d.source, split="train", n=d.train_size, **kw),
            load_images(d.source, split="test", n=d.test_size, **kw))


def encoder_spec(cfg: VQRAEConfig) -> EncoderSpec:
    """The encoder's spec; the committed default ``assets/vqrae_encoder`` is found from any working directory."""
    from pathlib import Path

    e = cfg.encoder
    path = e.path
    if e.kind == "tiny_vit" and not Path(path).is_dir():
        from shared.demo import resolve_model

        try:
            path = str(resolve_model(path, rebuild="tools/train_vqrae_encoder.py"))
        except FileNotFoundError:
            pass  # build_encoder names the missing folder and what belongs in it
    return EncoderSpec(kind=e.kind, path=path, image_size=cfg.data.image_size, mean=tuple(e.mean),
                       std=tuple(e.std), trust_remote_code=e.trust_remote_code,
                       non_affine_last_norm=e.non_affine_last_norm)


def decoder_spec(cfg: VQRAEConfig, encoder: nn.Module) -> DecoderSpec:
    """The encoder's geometry (a mirror), with any non-zero ``decoder.*`` field overriding it."""
    d = cfg.decoder
    mirror = {k: getattr(encoder, k, None) for k in ("width", "depth", "heads", "mlp_dim")}
    chosen = {k: (getattr(d, k) or mirror[k]) for k in mirror}
    missing = [k for k, v in chosen.items() if not v]
    if missing:
        raise ValueError(f"the encoder does not expose {missing}; set decoder.{missing[0]}=... explicitly")
    return DecoderSpec(grid=tuple(encoder.grid), patch=int(encoder.patch_size), **{k: int(v) for k, v in chosen.items()})


def build(cfg: VQRAEConfig) -> tuple[VQRAE, nn.Module]:
    """(model, teacher): the teacher is a frozen copy of the initial encoder (distillation, perceptual features,
    Fréchet-distance features)."""
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(encoder_spec(cfg))
    q = cfg.quantizer
    kw: dict[str, Any] = {"beta": q.beta}
    if q.kind == "simvq":
        kw["rotation_trick"] = q.rotation_trick
    else:
        kw.update(ema_decay=q.ema_decay or None, dead_code_threshold=q.dead_code_threshold)
    quantizer = build_quantizer(q.kind, q.codebook_size, q.dim, **kw)
    decoder = ViTDecoder(decoder_spec(cfg, encoder))
    model = VQRAE(encoder, quantizer, decoder, noise_tau=cfg.decoder.noise_tau)
    teacher = copy.deepcopy(encoder).eval().requires_grad_(False)
    return model, teacher


def lr_at(step: int, start: int, steps: int, peak: float, final: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps from ``start``, then cosine from ``peak`` to ``final`` (Table 7)."""
    k = step - start
    if warmup and k <= warmup:
        return peak * k / warmup
    t = min(1.0, (k - warmup) / max(1, steps - warmup))
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * t))


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def train(cfg: VQRAEConfig) -> dict[str, Any]:
    """Train both stages (resuming when asked), checkpoint, evaluate with the EMA weights; returns the summary."""
    from accelerate import PartialState

    run_dir = Path(cfg.run.dir)
    train_set, test_set = load_data(cfg)
    proc = PartialState(cpu=cfg.run.cpu)  # joins the process group under `accelerate launch`; one process otherwise
    device = proc.device
    model, teacher = build(cfg)
    model.to(device)
    teacher.to(device)
    t, lc = cfg.train, cfg.loss
    s1, total = t.stage1_steps, t.stage1_steps + t.stage2_steps
    rest = [p for n, p in model.named_parameters() if not n.startswith(("encoder.", "quantizer.")) and p.requires_grad]
    quant_params = [p for p in model.quantizer.parameters() if p.requires_grad]
    enc_params = list(model.encoder.parameters())
    optimizer = torch.optim.AdamW([{"params": rest, "name": "rest"}, {"params": enc_params, "name": "encoder"},
                                   {"params": quant_params, "name": "quantizer", "weight_decay": 0.0}],
                                  lr=t.lr1, betas=tuple(t.betas), weight_decay=t.weight_decay)
    perceptual = _perceptual(cfg, teacher)
    disc = disc_opt = None
    if lc.gan_weight > 0:
        disc = PatchDiscriminator().to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=lc.disc_lr, betas=(0.5, 0.9))
    ema = EMA(list(model.parameters()), t.ema_decay) if t.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(t.seed * 1000 + _rank())
    ckpt_dir = run_dir / "checkpoints"
    start = 0
    ckpt = latest_checkpoint(ckpt_dir) if cfg.run.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            disc_opt.load_state_dict(state["disc_opt"])
        gen.set_state(state["generator"]["state"])
        torch.set_rng_state(state["generator"]["torch"])
        start = state["step"]
        print(f"resuming {run_dir} from step {start}")
    main = _rank() == 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
    logger = MetricsLogger(run_dir, resume_step=start if ckpt is not None else None, enabled=main)

    def save(step: int) -> None:
        if not main:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "generator": {"state": gen.get_state(), "torch": torch.get_rng_state()}}
        if ema is not None:
            state["ema"] = ema.state_dict()
        if disc is not None:
            state.update(disc=disc.state_dict(), disc_opt=disc_opt.state_dict())
        save_checkpoint(ckpt_dir, step, state, keep_last=cfg.run.keep_last)

    per_rank = max(1, t.batch_size // world_size())
    n_params = sum(p.numel() for p in rest + quant_params) / 1e6
    print(f"vqrae: {n_params:.2f} M trained parameters besides the encoder "
          f"({sum(p.numel() for p in enc_params) / 1e6:.2f} M), codebook {cfg.quantizer.codebook_size} × "
          f"{cfg.quantizer.dim}, {len(train_set)} training images ({train_set.name}), {s1} + {t.stage2_steps} steps")
    autocast = _autocast(t.mixed_precision, device)
    tracker = MeanTracker(minimum=(), maximum=())
    steps = range(start + 1, total + 1)
    for step in (progress(steps, initial=start, total=total, desc="vqrae") if cfg.run.progress else steps):
        stage2 = step > s1
        _set_stage(model, optimizer, cfg, step, stage2)
        idx = torch.randint(0, len(train_set), (per_rank,), generator=gen)
        x = augment(train_set.batch(idx)[0], gen, crop_pad=cfg.data.crop_pad, flip=cfg.data.flip).to(device)
        with autocast:
            out = model(x)
            rec = pixel_loss(out.recon.float(), x, l2_weight=lc.l2, l1_weight=lc.l1)
            p_loss = perceptual(out.recon.float(), x) if perceptual is not None else torch.zeros((), device=device)
            loss = rec + lc.perceptual_weight * p_loss + out.quant.loss
            parts = {"rec_loss": rec, "perceptual_loss": p_loss, "quant_loss": out.quant.loss,
                     "codebook_loss": out.quant.codebook_loss, "commit_loss": out.quant.commit_loss}
            if stage2 and lc.distill_weight > 0:
                with torch.no_grad():
                    target = teacher(x)
                d_loss = distillation_loss(out.features.float(), target.float())
                loss = loss + lc.distill_weight * d_loss
                parts["distill_loss"] = d_loss
            gan_on = disc is not None and step > lc.gan_start
            if gan_on:
                g_loss = hinge_g_loss(disc(out.recon))
                w = adaptive_weight(rec + lc.perceptual_weight * p_loss, g_loss, model.decoder.last_layer)
                loss = loss + lc.gan_weight * w * g_loss
                parts.update(g_loss=g_loss, gan_adaptive_weight=w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        average_gradients(params)
        if t.max_grad_norm > 0:
            parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        optimizer.step()
        if gan_on:
            d_loss_val = hinge_d_loss(disc(x), disc(out.recon.detach().float()))
            disc_opt.zero_grad(set_to_none=True)
            d_loss_val.backward()
            average_gradients(disc.parameters())
            disc_opt.step()
            parts["d_loss"] = d_loss_val
        if ema is not None:
            ema.update()
        usage = CodeUsage(cfg.quantizer.codebook_size).update(out.quant.indices.detach())
        usage.all_reduce()  # the whole global batch's codes, on every rank
        tracker.add({"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()},
                     **usage.as_dict("batch_"),
                     "lr": optimizer.param_groups[0]["lr"], "encoder_lr": optimizer.param_groups[1]["lr"],
                     "stage": 2.0 if stage2 else 1.0})
        if step % cfg.run.log_every == 0 or step == total:
            logger.log(tracker.result(), step)
            tracker = MeanTracker(minimum=(), maximum=())
        if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == total:
            save(step)
    logger.close()
    summary: dict[str, Any] = {"steps": total, "stage1_steps": s1, "stage2_steps": t.stage2_steps,
                               "data": train_set.name, "codebook": [cfg.quantizer.codebook_size, cfg.quantizer.dim]}
    if main and total > start:
        try:
            plot_curves(run_dir, ["rec_loss", "quant_loss", "batch_utilisation"], run_dir / "curves.png")
        except ValueError:
            pass
    if cfg.run.evaluate and main:
        model.eval()
        ctx = ema.average_parameters() if ema is not None else contextlib.nullcontext()
        with ctx:
            summary.update(evaluate(cfg, model, teacher, train_set, test_set, device=device,
                                    grid_path=run_dir / "reconstructions.png"))
        (run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary


def _set_stage(model: VQRAE, optimizer: torch.optim.Optimizer, cfg: VQRAEConfig, step: int, stage2: bool) -> None:
    """Stage 1: encoder frozen (eval mode, no grad); stage 2: encoder trained at encoder_lr. Sets both lrs."""
    t = cfg.train
    model.train()
    model.encoder.requires_grad_(stage2)
    if not stage2:
        model.encoder.eval()
        rest_lr = lr_at(step, 0, t.stage1_steps, t.lr1, t.lr1_min, t.warmup)
        enc_lr = 0.0
    else:
        rest_lr = lr_at(step, t.stage1_steps, t.stage2_steps, t.lr2, t.lr2_min, t.warmup)
        enc_lr = t.encoder_lr * min(1.0, (step - t.stage1_steps) / t.warmup) if t.warmup else t.encoder_lr
    optimizer.param_groups[0]["lr"] = rest_lr
    optimizer.param_groups[1]["lr"] = enc_lr
    optimizer.param_groups[2]["lr"] = rest_lr * t.quantizer_lr_mult


def _perceptual(cfg: VQRAEConfig, teacher: nn.Module):
    lc = cfg.loss
    if lc.perceptual == "none" or lc.perceptual_weight == 0:
        return None
    if lc.perceptual == "features":
        return FeaturePerceptual(teacher.hidden_states)
    if lc.perceptual == "timm":
        return build_perceptual("timm", model_name=lc.perceptual_model, weights_path=lc.perceptual_weights)
    return build_perceptual("lpips", net=lc.perceptual_model)


def _autocast(precision: str, device: torch.device):
    if precision == "no" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def load_run(run_dir: str | Path, *, ema: bool = True, device: str = "cpu") -> tuple[VQRAEConfig, VQRAE, nn.Module]:
    """(config, model, teacher) of a trained run: its latest checkpoint, EMA weights by default."""
    from shared.training import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json; point at a folder written by `vqrae train`")
    cfg = load_config(VQRAEConfig, run_dir / "config.json")
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}; train first "
                                f"(`vqrae train --set run.dir={run_dir}`)")
    model, teacher = build(cfg)
    state = load_checkpoint(ckpt, map_location=device)
    model.load_state_dict(state["model"])
    if ema and "ema" in state:
        e = EMA(list(model.parameters()), cfg.train.ema_decay or 0.5)
        e.load_state_dict(state["ema"])
        e.copy_to()
    model.to(device).eval()
    teacher.to(device)
    return cfg, model, teacher
