"""``wfdiffuser`` (or ``python -m wfdiffuser``): offline datasets, training and evaluation of diffusion planners.

    wfdiffuser data  [--dataset ID] [--overwrite] [--list]     build one of our offline Minari datasets (no network)
    wfdiffuser train [--preset pendulum|inverted-pendulum|hopper-medium|...] [--set key=value ...]
    wfdiffuser eval  RUN_DIR [--episodes N] [--set plan.sampler=ddim ...]

``wfdiffuser train --help`` lists every config field. Without ``--preset`` the ``pendulum`` preset runs: it builds
our Pendulum-v1 dataset if needed, trains WFDiffuser and evaluates it on CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from shared.training import add_train_command, config_from_args

from wfdiffuser.config import WFConfig

__all__ = ["build_parser", "main"]

_RAW = argparse.RawDescriptionHelpFormatter


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = argparse.ArgumentParser(prog="wfdiffuser", formatter_class=_RAW, description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_p = sub.add_parser("data", help="build one of our offline datasets into $MINARI_DATASETS_PATH",
                            formatter_class=_RAW,
                            description="Build one of our offline Minari datasets with scripted behaviour policies "
                            "(no jax, no network) into $MINARI_DATASETS_PATH (default ~/.minari/datasets). Official "
                            "sets (mujoco/hopper/medium-v0, ...) must be downloaded on a networked machine with "
                            "`minari download <id>` and copied there.")
    data_p.add_argument("--dataset", default="wfdiffuser/pendulum/multi-v0", help="dataset id (see --list)")
    data_p.add_argument("--overwrite", action="store_true", help="replace an existing local copy")
    data_p.add_argument("--list", action="store_true", help="list the datasets this command can build")
    train_p = add_train_command(sub, WFConfig, help="train a planner, then evaluate it (config fields below)",
                                default_preset="pendulum", note="our Pendulum-v1 dataset on CPU, minutes")
    eval_p = sub.add_parser("eval", help="evaluate a trained run in its env", formatter_class=_RAW,
                            description="Evaluate the latest checkpoint (EMA weights) of a run folder; --set changes "
                            "plan.* and eval.* fields (e.g. plan.sampler=ddim plan.sample_steps=5).")
    eval_p.add_argument("run_dir", help="a folder written by `wfdiffuser train`")
    eval_p.add_argument("--episodes", type=int, default=0, help="episodes (0 = the run's eval.episodes)")
    eval_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override plan.* / eval.* fields")
    eval_p.add_argument("--out", default="", help="write the result JSON here (default RUN_DIR/eval.json)")
    return top, {"data": data_p, "train": train_p, "eval": eval_p}


def build_parser() -> argparse.ArgumentParser:
    """The ``wfdiffuser`` parser."""
    return _parsers()[0]


def _data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from wfdiffuser.data import OFFLINE_DATASETS, build_offline_dataset

    if args.list:
        for name, spec in OFFLINE_DATASETS.items():
            print(f"{name}  ({spec.env_id})")
        return 0
    if args.dataset not in OFFLINE_DATASETS:
        parser.error(f"--dataset {args.dataset!r} is not one of ours ({', '.join(OFFLINE_DATASETS)}); official "
                     "Minari sets are downloaded with `minari download <id>` on a networked machine")
    info = build_offline_dataset(args.dataset, overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in vars(info).items() if not k.startswith("_")}, indent=2, default=str))
    return 0


def _eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from shared.training import load_config, to_dict

    from wfdiffuser.train import evaluate, load_data, load_run, make_windows

    bad = [o for o in args.overrides if not o.split("=", 1)[0].startswith(("plan.", "eval.", "run."))]
    if bad:
        parser.error(f"--set {bad[0]}: eval only changes plan.*, eval.* and run.* fields")
    try:
        cfg, model = load_run(args.run_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    cfg = load_config(WFConfig, to_dict(cfg), args.overrides + ([f"eval.episodes={args.episodes}"]
                                                                if args.episodes else []))
    torch.set_num_threads(cfg.run.threads) if cfg.run.threads else None
    episodes, info = load_data(cfg)
    result = evaluate(cfg, model, make_windows(cfg, episodes), info)
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval.json"
    out.write_text(json.dumps(result, indent=2))
    _print(result)
    return 0


def _print(result: dict) -> None:
    line = f"return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {result['episodes']} episodes " \
           f"(dataset mean {result['dataset_return_mean']:.1f})"
    if "score_mean" in result:
        line += f", normalised score {result['score_mean']:.1f} ± {result['score_stderr']:.1f} (s.e.)"
    print(line)
    if result.get("env_id", "").split("-")[0] in ("Hopper", "HalfCheetah", "Walker2d"):
        print("note: D4RL-reference-normalised on Gymnasium v5 envs; Minari's mujoco/* sets are not the D4RL-v2 data "
              "of the paper, so these scores are not comparable to its tables.")


def main(argv: Sequence[str] | None = None) -> int:
    top, subs = _parsers()
    args = top.parse_args(argv)
    if args.command == "data":
        return _data(args, subs["data"])
    if args.command == "eval":
        return _eval(args, subs["eval"])
    cfg = config_from_args(WFConfig, args, subs["train"])
    if cfg is None:  # --print-config
        return 0
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    from wfdiffuser.train import train

    summary = train(cfg)
    if "return_mean" in summary:
        _print(summary)
    return 0
