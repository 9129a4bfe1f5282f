"""``chunk-grpo`` (or ``python -m chunk_grpo``): train with GCPO, or plot a model's L1rel curve and its chunks.

    chunk-grpo train [--preset NAME] [--config FILE] [--set key=value ...] [--print-config]
    chunk-grpo l1rel --model DIR --out PNG [--prompts N] [--num-steps T] [--sizes 2,2,4] ...

``chunk-grpo --help`` and ``chunk-grpo train --help`` list every config field with its type, default and meaning
(shared.training.build_arg_parser); ``chunk-grpo l1rel --help`` lists the plot's options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from shared.errors import CheckpointError
from shared.flow_grpo.cli import print_summary
from shared.training import add_train_command, config_from_args

from chunk_grpo.config import GCPOConfig

__all__ = ["build_parser", "main"]

_RAW = argparse.RawDescriptionHelpFormatter


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 2,2,4, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive ints like 2,2,4, got {text!r}")
    return values


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    top = argparse.ArgumentParser(prog="chunk-grpo", formatter_class=_RAW,
                                  description="Chunk-level GRPO (GCPO) for flow-matching text-to-image models.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_p = add_train_command(sub, GCPOConfig, help="train with GCPO (config fields below)")
    l1 = sub.add_parser("l1rel", formatter_class=_RAW, help="plot a model's L1rel curve and the chunks it yields",
                        description="Sample shapes prompts with the SDE sampler, plot L1rel (Eq. 16) mean ± std and "
                        "the fixed / uniform / adaptive chunks; writes PNG and JSON.")
    l1.add_argument("--model", default="assets/shapes_base", help="local diffusers pipeline folder (default: %(default)s)")
    l1.add_argument("--out", required=True, help="PNG path; the curve goes to the same path with .json")
    l1.add_argument("--prompts", type=int, default=16, help="number of seeded shapes prompts (default: %(default)s)")
    l1.add_argument("--num-steps", type=int, default=8, help="sampling steps T (default: %(default)s)")
    l1.add_argument("--noise-level", type=float, default=0.7, help="flow_grpo SDE noise a (default: %(default)s)")
    l1.add_argument("--guidance", type=float, default=4.0,
                    help="CFG scale, 1 = none (default: %(default)s, the shapes preset's)")
    l1.add_argument("--seed", type=int, default=0, help="seed of prompts and noise (default: %(default)s)")
    l1.add_argument("--drop-last", action="store_true", help="chunk T − 1 transitions (the last is not trained)")
    l1.add_argument("--sizes", type=_int_list, default=[2, 2, 4],
                    help="fixed chunk sizes, high noise first, summing to the trained transitions (default: 2,2,4)")
    l1.add_argument("--size", type=int, default=4, help="uniform chunk size (default: %(default)s)")
    l1.add_argument("--max-chunk", type=int, default=4, help="adaptive max_chunk (default: %(default)s)")
    l1.add_argument("--min-chunk", type=int, default=1, help="adaptive min_chunk (default: %(default)s)")
    l1.add_argument("--max-order", type=int, default=3, help="adaptive max_order (default: %(default)s)")
    top.epilog = ("commands: train (GCPO training), l1rel (curve plot); `chunk-grpo l1rel --help` for its options.\n\n"
                  "train " + (train_p.epilog or ""))
    return top, train_p, l1


def build_parser() -> argparse.ArgumentParser:
    """The ``chunk-grpo`` parser (subcommands ``train`` and ``l1rel``)."""
    return _parsers()[0]


def main(argv: Sequence[str] | None = None) -> int:
    top, train_p, l1 = _parsers()
    args = top.parse_args(argv)
    if args.command == "train":
        cfg = config_from_args(GCPOConfig, args, train_p)
        if cfg is None:  # --print-config
            return 0
        from chunk_grpo.train import train

        last = train(cfg)
        print_summary(last, cfg.run.dir)
        return 0

    from chunk_grpo.l1rel_plot import run

    if args.prompts < 1 or args.num_steps < 1:
        l1.error("--prompts and --num-steps must be >= 1")
    try:
        report = run(args.model, args.out, prompts=args.prompts, num_steps=args.num_steps,
                     noise_level=args.noise_level, guidance_scale=args.guidance, seed=args.seed, sizes=args.sizes,
                     size=args.size, max_chunk=args.max_chunk, min_chunk=args.min_chunk, max_order=args.max_order,
                     drop_last=args.drop_last)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        l1.error(str(err))
    for name, sizes in report.chunkings.items():
        print(f"{name:9s} {sizes}")
    print(f"wrote {args.out} and its .json")
    return 0
