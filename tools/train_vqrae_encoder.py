"""Train the tiny "pretrained" encoder that stands in for SigLIP2 in VQRAE's offline runs (card §7).

A ``vqrae.encoders.TinyViT`` (32 px, patch 4 → 8×8 tokens of width 64, 4 blocks) is trained from scratch as a
multi-label tagger of the 18 (colour, shape) pairs of the shapes world — a sigmoid / binary cross-entropy loss per
label, like SigLIP's sigmoid loss — on fresh renders of all six GenEval tags (every step draws new scenes; random
crop + flip as in the paper), AdamW with linear warm-up and cosine decay. The head runs at ``head_lr_mult`` × the
learning rate: mean-pooled tokens vary little between images at initialisation (most patches are white
background), so with Adam's per-weight step a head at the body's lr needs hundreds of steps before the body gets a
useful gradient (the loss sat at the label prior for ~200 steps in our first run). Inputs are normalised with
mean = std = 0.5 per channel (SigLIP's), recorded in ``config.json`` (``metadata``) and ``eval.json`` so the VQRAE
config uses the same values (``encoder.mean`` / ``encoder.std``).

After training it reports, on held-out renders (other seeds), the multi-label exact-match accuracy (all 18 labels
right) and each label's accuracy, and the linear-probe accuracy (logistic regression on mean-pooled
``forward_features``) on single-object scenes (18 classes) for the trained encoder and for a randomly initialised
one of the same shape — the checkpoint carries semantics when the first is clearly higher.

Rebuild the committed checkpoint (about 4 minutes on one CPU thread: 221 s on a shared 2-core machine, where a
second thread made each step slower, hence ``--threads 1``; training is deterministic for a given seed)::

    uv run python tools/train_vqrae_encoder.py --out assets/vqrae_encoder

It writes ``config.json`` + ``model.safetensors`` (load with ``TinyViT.from_pretrained`` or
``build_encoder(EncoderSpec(kind="tiny_vit", path=...))``), ``train_config.json``, ``train_log.jsonl`` and
``eval.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared.shapes import COLOR_NAMES, SHAPES, TAGS
from vqrae.data import NUM_PAIRS, augment, shapes_set, single_object_set
from vqrae.encoders import EncoderSpec, TinyViT, TinyViTConfig, TinyViTEncoder

LABELS = [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES]  # index = colour · 3 + shape
EVAL_SEED = 10_000_000  # held-out renders; training uses seeds seed·10⁶ + step (< 10⁶ steps)
PROBE_SEED = 20_000_000


@dataclass
class EncoderTrainConfig:
    out: str = "assets/vqrae_encoder"
    image_size: int = 32
    patch: int = 4
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    head_lr_mult: float = 50.0  # the head's lr = this × lr (see the module doc)
    min_lr: float = 1e-5
    warmup: int = 50
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0
    crop_pad: int = 2
    flip: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    seed: int = 0
    threads: int = 1
    log_every: int = 25
    eval_per_tag: int = 200
    probe_train: int = 1000
    probe_test: int = 500
    progress: bool = True


def lr_at(step: int, cfg: EncoderTrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine to ``min_lr`` at ``steps`` (step is 1-based)."""
    if step <= cfg.warmup:
        return cfg.lr * step / max(1, cfg.warmup)
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def tag_metrics(enc: TinyViTEncoder, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> dict:
    """Exact-match accuracy (all 18 sigmoid decisions right) and per-label accuracy, threshold logit 0."""
    enc.eval()
    preds = torch.cat([enc.model.head(enc(images[i:i + batch]).mean(1)) > 0 for i in range(0, len(images), batch)])
    right = preds == labels.bool()
    per_label = right.float().mean(0)
    return {"exact_match": right.all(1).float().mean().item(), "label_accuracy_mean": per_label.mean().item(),
            "per_label": {name: round(v, 4) for name, v in zip(LABELS, per_label.tolist(), strict=True)}}


@torch.no_grad()
def pooled(enc: TinyViTEncoder, images: torch.Tensor, batch: int = 250) -> np.ndarray:
    enc.eval()
    return torch.cat([enc(images[i:i + batch]).mean(1) for i in range(0, len(images), batch)]).numpy()


def linear_probe(enc: TinyViTEncoder, train, test) -> float:
    """Held-out accuracy of a logistic regression on mean-pooled patch tokens (standardised)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(pooled(enc, train.images), train.labels.numpy())
    return float(clf.score(pooled(enc, test.images), test.labels.numpy()))


def train(cfg: EncoderTrainConfig, model: TinyViT, enc: TinyViTEncoder, log_path: Path) -> float:
    """The tagger loop: fresh renders → augment → BCE over 18 labels → AdamW step; returns the seconds taken."""
    body = [(n, p) for n, p in model.named_parameters() if not n.startswith("head.")]
    groups = [{"params": [p for n, p in body if p.ndim >= 2 and n != "pos"], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in body if p.ndim < 2 or n == "pos"], "weight_decay": 0.0},
              {"params": list(model.head.parameters()), "weight_decay": 0.0, "lr_mult": cfg.head_lr_mult}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    acc_loss = acc_exact = 0.0
    bar = tqdm(range(1, cfg.steps + 1), desc="tagger", disable=not cfg.progress, dynamic_ncols=True)
    with open(log_path, "w", encoding="utf-8") as log:
        for step in bar:
            enc.train()
            data = shapes_set(cfg.batch_size, seed=cfg.seed * 1_000_000 + step, image_size=cfg.image_size)
            x = augment(data.images, gen, crop_pad=cfg.crop_pad, flip=cfg.flip)
            logits = model.head(enc(x).mean(1))
            loss = F.binary_cross_entropy_with_logits(logits, data.labels)
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            acc_loss += loss.item()
            acc_exact += ((logits > 0) == data.labels.bool()).all(1).float().mean().item()
            if step % cfg.log_every == 0 or step == cfg.steps:
                k = (step - 1) % cfg.log_every + 1
                rec = {"step": step, "loss": acc_loss / k, "exact_match": acc_exact / k, "lr": lr,
                       "grad_norm": float(gnorm), "seconds": round(time.time() - t0, 2)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}", exact=f"{rec['exact_match']:.3f}")
                acc_loss = acc_exact = 0.0
    return time.time() - t0


def main(argv: list[str] | None = None) -> dict:
    cfg = EncoderTrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, value in asdict(cfg).items():
        if isinstance(value, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"),
                                default=value)
        elif not isinstance(value, tuple):
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    cfg = EncoderTrainConfig(**{**asdict(cfg), **vars(parser.parse_args(argv))})

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    tcfg = TinyViTConfig(image_size=cfg.image_size, patch=cfg.patch, width=cfg.width, depth=cfg.depth,
                         heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, num_classes=NUM_PAIRS)
    spec = EncoderSpec(kind="tiny_vit", image_size=cfg.image_size, mean=cfg.mean, std=cfg.std)
    model = TinyViT(tcfg)
    enc = TinyViTEncoder(model, spec)  # normalises exactly as build_encoder will
    train_seconds = train(cfg, model, enc, out / "train_log.jsonl")

    meta = {"mean": list(cfg.mean), "std": list(cfg.std), "labels": LABELS,
            "trained_by": "tools/train_vqrae_encoder.py"}
    model.save_pretrained(out, metadata=meta)

    # ---- evaluation: held-out tagging, linear probe trained vs random init
    heldout = shapes_set(cfg.eval_per_tag * len(TAGS), seed=EVAL_SEED, image_size=cfg.image_size)
    metrics = tag_metrics(enc, heldout.images, heldout.labels)
    per_tag = {t: tag_metrics(enc, *_tag_set(t, cfg))["exact_match"] for t in TAGS}
    ptrain = single_object_set(cfg.probe_train, seed=PROBE_SEED, image_size=cfg.image_size)
    ptest = single_object_set(cfg.probe_test, seed=PROBE_SEED + 1, image_size=cfg.image_size)
    torch.manual_seed(cfg.seed + 1)
    random_enc = TinyViTEncoder(TinyViT(tcfg), spec)
    reloaded = TinyViTEncoder(TinyViT.from_pretrained(out), spec)
    result = {
        "train_seconds": round(train_seconds, 1),
        "steps": cfg.steps,
        "images_seen": cfg.steps * cfg.batch_size,
        "threads": cfg.threads,
        "input_mean": list(cfg.mean),
        "input_std": list(cfg.std),
        "heldout_tagging": {"n": len(heldout), **metrics, "exact_match_per_tag": per_tag},
        "linear_probe": {"task": "single-object (colour, shape), 18 classes", "train": len(ptrain),
                         "test": len(ptest), "trained": linear_probe(reloaded, ptrain, ptest),
                         "random_init": linear_probe(random_enc, ptrain, ptest), "chance": 1 / NUM_PAIRS},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (out / "model.safetensors").stat().st_size,
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "heldout_tagging"}, indent=2))
    print(f"held-out exact match {metrics['exact_match']:.3f}, mean label accuracy "
          f"{metrics['label_accuracy_mean']:.4f}, per tag {json.dumps({k: round(v, 3) for k, v in per_tag.items()})}")
    return result


def _tag_set(tag: str, cfg: EncoderTrainConfig):
    s = shapes_set(cfg.eval_per_tag, seed=EVAL_SEED + 1 + TAGS.index(tag), image_size=cfg.image_size, tags=tag)
    return s.images, s.labels


if __name__ == "__main__":
    main()
