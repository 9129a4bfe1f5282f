"""``slas`` (or ``python -m slas``): train with Super-Linear Advantage Shaping or the DanceGRPO baseline.

    slas train [--advantage dance|slas] [--gamma G] [--preset NAME] [--config FILE] [--set key=value ...]

``slas train --help`` lists every config field with its type, default and meaning. ``--advantage`` and ``--gamma``
are shorthands for ``--set advantage.mode=...`` and ``--set advantage.gamma=...``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from shared.flow_grpo.cli import print_summary
from shared.training import add_train_command, config_from_args

from slas.config import ADVANTAGE_MODES, SLASConfig

__all__ = ["build_parser", "main"]

_RAW = argparse.RawDescriptionHelpFormatter


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    top = argparse.ArgumentParser(prog="slas", formatter_class=_RAW,
                                  description="Super-Linear Advantage Shaping (SLAS, reconstructed from the abstract) "
                                  "on the shared flow-GRPO trainer, with the DanceGRPO baseline.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_p = add_train_command(sub, SLASConfig, help="train (config fields below)")
    train_p.add_argument("--advantage", choices=ADVANTAGE_MODES, default=None,
                         help="shorthand for --set advantage.mode=...: dance (DanceGRPO baseline) or slas")
    train_p.add_argument("--gamma", type=float, default=None, help="shorthand for --set advantage.gamma=...")
    top.epilog = "commands: train; `slas train --help` for every option.\n\ntrain " + (train_p.epilog or "")
    return top, train_p


def build_parser() -> argparse.ArgumentParser:
    """The ``slas`` parser (subcommand ``train``)."""
    return _parsers()[0]


def main(argv: Sequence[str] | None = None) -> int:
    top, train_p = _parsers()
    args = top.parse_args(argv)
    extra = []
    if args.advantage is not None:
        extra.append(f"advantage.mode={args.advantage}")
    if args.gamma is not None:
        extra.append(f"advantage.gamma={args.gamma}")
    args.overrides = list(getattr(args, "overrides", None) or []) + extra
    cfg = config_from_args(SLASConfig, args, train_p)
    if cfg is None:  # --print-config
        return 0
    from slas.train import train

    last = train(cfg)
    print_summary(last, cfg.run.dir)
    return 0
