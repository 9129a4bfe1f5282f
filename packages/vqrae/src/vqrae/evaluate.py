"""Held-out evaluation of a VQRAE (card §5, §7): reconstruction, codebook use, and "understanding kept".

    psnr, ssim                 of X′ = D(Q(E(X))) against X on the held-out images (mean over images)
    mean_image_psnr            the baseline: every held-out image predicted by the training images' mean image
    fd_initial_encoder         Fréchet distance between mean-pooled features of X and X′ under the frozen initial
                               encoder (offline; not FID: Inception weights are not available)
    utilisation, perplexity,   over all held-out tokens (vqrae.usage)
    dead_codes
    feature_drift              ‖Z_I − T(X)‖² / ‖T(X)‖² over held-out tokens: how far the (stage-2) encoder moved from
                               the initial one T (0 while it is frozen)
    probe_initial, probe       linear-probe accuracy (18 colour × shape classes of single-object scenes) of the
                               continuous features Z_I of the initial encoder and of the trained one
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqrae.data import ImageSet, single_object_set
from vqrae.metrics import frechet_distance, linear_probe, mean_image_psnr, psnr, ssim
from vqrae.usage import CodeUsage

__all__ = ["encoder_features", "evaluate", "probe_accuracy"]


@torch.no_grad()
def encoder_features(encoder: nn.Module, images: Tensor, batch_size: int = 100) -> Tensor:
    """Mean-pooled patch tokens (B, width) of ``encoder`` (eval mode), batched, on CPU."""
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    out = [encoder(images[i:i + batch_size].to(dev)).float().mean(1).cpu() for i in range(0, len(images), batch_size)]
    encoder.train(was)
    return torch.cat(out)


def probe_accuracy(encoder: nn.Module, train: ImageSet, test: ImageSet, batch_size: int = 100) -> float:
    """Linear-probe accuracy of the encoder's pooled continuous features (vqrae.metrics.linear_probe)."""
    return linear_probe(encoder_features(encoder, train.images, batch_size).numpy(), train.labels.numpy(),
                        encoder_features(encoder, test.images, batch_size).numpy(), test.labels.numpy())


@torch.no_grad()
def evaluate(cfg, model, teacher: nn.Module, train_set: ImageSet, test_set: ImageSet, *,
             device: torch.device | str = "cpu", grid_path: str | Path | None = None) -> dict[str, Any]:
    """The metrics of the module doc for ``model`` (use the EMA weights) on ``test_set``."""
    model.eval()
    teacher.eval()
    bs = cfg.eval.batch_size
    x = test_set.images
    dev = next(model.parameters()).device
    usage = CodeUsage(model.codebook_size)
    recon, t_real, t_fake = [], [], []
    drift_num = drift_den = 0.0
    for i in range(0, len(x), bs):  # one pass: reconstruction, codes and both encoders' features
        xb = x[i:i + bs].to(dev)
        ob = model(xb)
        rb = ob.recon.clamp(0, 1)
        tb = teacher(xb).float()
        usage.update(ob.quant.indices)
        drift_num += float((ob.features.float() - tb).pow(2).sum())
        drift_den += float(tb.pow(2).sum())
        t_real.append(tb.mean(1).cpu())
        t_fake.append(teacher(rb).float().mean(1).cpu())
        recon.append(rb.cpu())
    recon = torch.cat(recon)
    out: dict[str, Any] = {
        "test_images": len(x),
        "psnr": float(psnr(recon, x).mean()),
        "ssim": float(ssim(recon, x).mean()),
        "mean_image_psnr": float(mean_image_psnr(train_set.images, x)),
        "fd_initial_encoder": frechet_distance(torch.cat(t_real).double().numpy(), torch.cat(t_fake).double().numpy()),
        "feature_drift": drift_num / drift_den,
        **usage.as_dict(""),
    }
    e = cfg.eval
    if e.probe_train > 0 and e.probe_test > 0:
        size = cfg.data.image_size
        ptrain = single_object_set(e.probe_train, seed=cfg.data.seed + 20_000, image_size=size)
        ptest = single_object_set(e.probe_test, seed=cfg.data.seed + 30_000, image_size=size)
        out["probe_initial"] = probe_accuracy(teacher, ptrain, ptest, bs)
        out["probe"] = probe_accuracy(model.encoder, ptrain, ptest, bs)
    if grid_path is not None and e.grid > 0:
        from shared.imaging import save_image_grid

        n = min(e.grid, len(x))
        save_image_grid(torch.cat([x[:n], recon[:n]]), grid_path, nrow=n, scale=4)
    return out
