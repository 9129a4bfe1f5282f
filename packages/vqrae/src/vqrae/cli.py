"""``vqrae`` (or ``python -m vqrae``): train, evaluate and use a VQ representation autoencoder.

    vqrae train  [--preset tiny|siglip2-so400m-256|dinov2-b-reg] [--set key=value ...]
    vqrae eval   RUN_DIR                       PSNR, SSIM, FD, utilisation, linear probe (EMA weights)
    vqrae encode RUN_DIR --out tokens.npz      images → token ids (the run's held-out set, or --source/--path)
    vqrae decode RUN_DIR tokens.npz --out grid.png   token ids → images

``vqrae train --help`` lists every config field. Without ``--preset`` the ``tiny`` preset runs: shapes-world
images at 32 px with the committed tiny ViT encoder, both stages and the evaluation on CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from shared.training import add_train_command, config_from_args

from vqrae.config import SOURCES, VQRAEConfig

__all__ = ["build_parser", "main"]

_RAW = argparse.RawDescriptionHelpFormatter


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = argparse.ArgumentParser(prog="vqrae", formatter_class=_RAW, description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_p = add_train_command(sub, VQRAEConfig, help="train both stages, then evaluate (config fields below)",
                                default_preset="tiny", note="shapes world at 32 px, CPU, minutes")
    eval_p = sub.add_parser("eval", formatter_class=_RAW, help="evaluate a trained run on its held-out images",
                            description="Evaluate the latest checkpoint (EMA weights) of a run folder on its held-out "
                            "images: PSNR and SSIM against the mean-image baseline, Fréchet distance on the initial "
                            "encoder's features, codebook utilisation / perplexity / dead codes, linear probe.")
    eval_p.add_argument("run_dir", help="a folder written by `vqrae train`")
    eval_p.add_argument("--out", default="", help="write the result JSON here (default RUN_DIR/eval.json)")
    enc_p = sub.add_parser("encode", formatter_class=_RAW, help="images → token ids (.npz)",
                           description="Encode images to VQRAE token ids and write a token dump (vqrae.tokens). By "
                           "default the run's own held-out images; --source/--path/--split choose others.")
    enc_p.add_argument("run_dir", help="a folder written by `vqrae train`")
    enc_p.add_argument("--out", required=True, help="the .npz to write")
    enc_p.add_argument("--source", default="", choices=["", *SOURCES], help="image source (default: the run's)")
    enc_p.add_argument("--path", default="", help="image folder for --source folder")
    enc_p.add_argument("--split", default="test", choices=["train", "test"], help="which split of the source")
    enc_p.add_argument("--images", type=int, default=0, help="number of images (0 = the run's data.test_size)")
    dec_p = sub.add_parser("decode", formatter_class=_RAW, help="token ids (.npz) → images (PNG grid)",
                           description="Decode a token dump with the run's decoder into a PNG grid.")
    dec_p.add_argument("run_dir", help="the run whose codebook made the tokens")
    dec_p.add_argument("tokens", help="a .npz written by `vqrae encode` (or by a generator in the same format)")
    dec_p.add_argument("--out", required=True, help="the PNG to write")
    dec_p.add_argument("--n", type=int, default=64, help="decode the first N token grids")
    return top, {"train": train_p, "eval": eval_p, "encode": enc_p, "decode": dec_p}


def build_parser() -> argparse.ArgumentParser:
    """The ``vqrae`` parser."""
    return _parsers()[0]


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from vqrae.train import load_run

    try:
        return load_run(args.run_dir)
    except FileNotFoundError as err:
        parser.error(str(err))


def _eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from vqrae.evaluate import evaluate
    from vqrae.train import load_data

    cfg, model, teacher = _load(args, parser)
    train_set, test_set = load_data(cfg)
    result = evaluate(cfg, model, teacher, train_set, test_set, grid_path=Path(args.run_dir) / "reconstructions.png")
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    out.write_text(json.dumps(result, indent=2))
    print_summary(result)
    return 0


def _encode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vqrae.data import load_images
    from vqrae.tokens import VQRAETokenizer, save_tokens

    cfg, model, _ = _load(args, parser)
    source = args.source or cfg.data.source
    if source == "folder" and not (args.path or cfg.data.path):
        parser.error("--source folder needs --path DIR")
    images = load_images(source, split=args.split, n=args.images or cfg.data.test_size, seed=cfg.data.seed,
                         image_size=cfg.data.image_size, path=args.path or cfg.data.path)
    tok = VQRAETokenizer(model, cfg.data.image_size)
    ids = tok.encode(images.images)
    path = save_tokens(args.out, ids, codebook_size=tok.codebook_size, grid=tok.grid, image_size=tok.image_size,
                       run=str(args.run_dir), captions=getattr(images, "captions", None))
    print(f"wrote {len(ids)} token grids of {tok.grid[0]}×{tok.grid[1]} (codebook {tok.codebook_size}) to {path}")
    return 0


def _decode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from shared.imaging import save_image_grid

    from vqrae.tokens import VQRAETokenizer, load_tokens

    cfg, model, _ = _load(args, parser)
    try:
        dump = load_tokens(args.tokens)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    tok = VQRAETokenizer(model, cfg.data.image_size)
    if dump["codebook_size"] != tok.codebook_size or tuple(dump["ids"].shape[1:]) != tuple(tok.grid):
        parser.error(f"{args.tokens}: codebook {dump['codebook_size']}, grid {tuple(dump['ids'].shape[1:])} do not "
                     f"match the run's codebook {tok.codebook_size}, grid {tok.grid}")
    images = tok.decode(dump["ids"][: args.n])
    save_image_grid(images, args.out, scale=max(1, 128 // cfg.data.image_size))
    print(f"decoded {len(images)} images to {args.out}")
    return 0


def print_summary(result: dict) -> None:
    """One line of the headline numbers."""
    line = (f"PSNR {result['psnr']:.2f} dB (mean-image baseline {result['mean_image_psnr']:.2f}), "
            f"SSIM {result['ssim']:.3f}, utilisation {result['utilisation']:.1%}, "
            f"perplexity {result['perplexity']:.0f}, FD(initial encoder) {result['fd_initial_encoder']:.3f}")
    if "probe" in result:
        line += f", linear probe {result['probe']:.3f} (initial encoder {result['probe_initial']:.3f})"
    print(line)


def main(argv: Sequence[str] | None = None) -> int:
    top, subs = _parsers()
    args = top.parse_args(argv)
    if args.command in ("eval", "encode", "decode"):
        return {"eval": _eval, "encode": _encode, "decode": _decode}[args.command](args, subs[args.command])
    cfg = config_from_args(VQRAEConfig, args, subs["train"])
    if cfg is None:  # --print-config
        return 0
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    from vqrae.train import train

    summary = train(cfg)
    if "psnr" in summary:
        print_summary(summary)
    return 0
