"""``mask-grpo`` (or ``python -m mask_grpo``): train a masked text-to-image model with Mask-GRPO.

    mask-grpo train [--preset shapes|showo-512|amused-512] [--config FILE] [--set key=value ...] [--print-config]

``mask-grpo train --help`` lists every config field with its type, default and meaning. Without ``--preset`` the
``shapes`` preset runs: the committed shapes-world masked base on CPU, a few minutes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from shared.flow_grpo.cli import print_summary
from shared.training import add_train_command, config_from_args

from mask_grpo.config import MaskGRPOConfig

__all__ = ["build_parser", "main"]

_RAW = argparse.RawDescriptionHelpFormatter


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    top = argparse.ArgumentParser(prog="mask-grpo", formatter_class=_RAW,
                                  description="Mask-GRPO: GRPO for masked generative text-to-image models "
                                  "(the shapes-world base, aMUSEd, Show-o).")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_p = add_train_command(sub, MaskGRPOConfig, help="train with Mask-GRPO (config fields below)",
                                note="shapes-world masked base, CPU, minutes")
    top.epilog = "commands: train; `mask-grpo train --help` lists every option.\n\ntrain " + (train_p.epilog or "")
    return top, train_p


def build_parser() -> argparse.ArgumentParser:
    """The ``mask-grpo`` parser."""
    return _parsers()[0]


def main(argv: Sequence[str] | None = None) -> int:
    top, train_p = _parsers()
    args = top.parse_args(argv)
    cfg = config_from_args(MaskGRPOConfig, args, train_p)
    if cfg is None:  # --print-config
        return 0
    from mask_grpo.train import train

    last = train(cfg)
    print_summary(last, cfg.run.dir)
    return 0
