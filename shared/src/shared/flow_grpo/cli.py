"""``python -m shared.flow_grpo --preset shapes [--config FILE] [--set key=value ...] [--print-config]``.

``--help`` lists every config field with its type, default and meaning (shared.training.build_arg_parser).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from shared.flow_grpo.config import RunConfig
from shared.training import parse_config

__all__ = ["main", "print_summary"]


def main(argv: Sequence[str] | None = None) -> dict:
    cfg, _ = parse_config(RunConfig, argv)
    from shared.flow_grpo.train import train

    last = train(cfg)
    print_summary(last, cfg.run.dir)
    return last


def print_summary(last: dict, run_dir: str) -> None:
    """The last metrics record (timings left out) and where the run's files are; every trainer CLI ends with it."""
    print(json.dumps({k: v for k, v in last.items() if not k.startswith("time")}, indent=2))
    print(f"metrics, checkpoints, samples_before/after.png and reward_curve.png in {run_dir}")
