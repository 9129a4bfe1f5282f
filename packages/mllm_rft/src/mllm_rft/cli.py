"""``mllm-rft`` (or ``python -m mllm_rft``): supervised warm-up, RL fine-tuning and evaluation of image-text models.

    mllm-rft sft   [--preset shapes] [--set key=value ...]            tiny Qwen2-VL + tokenizer from scratch (or a
                                                                      local checkpoint) on reference completions
    mllm-rft train [--preset shapes-count|qwen2vl-2b-clevr|qwen25vl-7b-geo3k] [--set key=value ...]
    mllm-rft eval  MODEL_DIR [--tasks counting,...] [--split test,ood] [--n 300]

``mllm-rft train --help`` lists every config field. Without ``--preset`` the ``shapes-count`` preset runs: GRPO on
the committed tiny Qwen2-VL (``assets/shapes_vlm``) for shapes-world counting on CPU in minutes, then greedy
accuracy on the held-out and out-of-distribution questions, curves and rendered examples in the run folder.
Objectives: ``--set objective.preset=grpo|dapo|dr_grpo|gspo`` (``objective.loss=cispo|sapo`` as options).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from shared.training import add_train_command, config_from_args

from mllm_rft.config import RFTConfig, SFTConfig
from mllm_rft.tasks import SPLITS, TASKS

__all__ = ["build_parser", "main"]

_RAW = argparse.RawDescriptionHelpFormatter


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = argparse.ArgumentParser(prog="mllm-rft", formatter_class=_RAW, description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sft_p = add_train_command(sub, SFTConfig, help="supervised warm-up on reference completions (config below)",
                              default_preset="shapes", note="tiny Qwen2-VL from scratch, CPU, minutes", name="sft")
    train_p = add_train_command(sub, RFTConfig, help="GRPO-family RL fine-tuning (config fields below)",
                                default_preset="shapes-count", note="tiny Qwen2-VL on counting, CPU, minutes")
    eval_p = sub.add_parser("eval", formatter_class=_RAW, help="greedy accuracy of a model on the shapes tasks",
                            description="Greedy accuracy, format rate and response length of a local model folder "
                            "(save_pretrained layout: `mllm-rft sft` output, a run's policy/ folder, or a "
                            "downloaded Qwen2-VL) on shapes-world questions.")
    eval_p.add_argument("model_dir", help="model folder, or a run folder written by `mllm-rft train` (uses policy/)")
    eval_p.add_argument("--tasks", default="counting", help=f"comma-separated, from {', '.join(sorted(TASKS))}")
    eval_p.add_argument("--split", default="test,ood", help=f"comma-separated, from {', '.join(SPLITS)}")
    eval_p.add_argument("--n", type=int, default=300, help="questions per task and split")
    eval_p.add_argument("--seed", type=int, default=0, help="seed of the question sets (the training default is 0)")
    eval_p.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    eval_p.add_argument("--max-new-tokens", type=int, default=48, help="completion limit")
    eval_p.add_argument("--batch-size", type=int, default=150, help="questions per generate call")
    eval_p.add_argument("--examples", default="", help="save a grid of the first 8 questions per split here (PNG "
                        "prefix)")
    eval_p.add_argument("--out", default="", help="write the result JSON here")
    return top, {"sft": sft_p, "train": train_p, "eval": eval_p}


def build_parser() -> argparse.ArgumentParser:
    """The ``mllm-rft`` parser."""
    return _parsers()[0]


def _eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from mllm_rft.evaluate import evaluate, save_examples
    from mllm_rft.models import load_vlm
    from mllm_rft.tasks import make_split

    tasks = [t for t in args.tasks.split(",") if t]
    splits = [s for s in args.split.split(",") if s]
    for t in tasks:
        if t not in TASKS:
            parser.error(f"--tasks: unknown task {t!r}; choose from {', '.join(sorted(TASKS))}")
    for s in splits:
        if s not in SPLITS:
            parser.error(f"--split: unknown split {s!r}; choose from {', '.join(SPLITS)}")
    folder = Path(args.model_dir)
    if (folder / "policy" / "config.json").is_file():
        folder = folder / "policy"
    try:
        model, processor = load_vlm(folder, dtype="float32" if not torch.cuda.is_available() else "auto",
                                    device="cuda" if torch.cuda.is_available() else "cpu")
    except FileNotFoundError as err:
        parser.error(str(err))
    result = {}
    for t in tasks:
        for s in splits:
            samples = make_split(t, s, args.n, seed=args.seed, image_size=args.image_size)
            res = evaluate(model, processor, samples, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
            result[f"{t}/{s}"] = res.as_dict()
            print(f"{t}/{s}: accuracy {res.accuracy:.3f}, format {res.format_rate:.3f}, length {res.mean_length:.1f}")
            if args.examples:
                save_examples(samples[:8], EvalSlice.of(res, 8), f"{args.examples}_{t}_{s}.png")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


class EvalSlice:
    """The first n entries of an EvalResult (for example grids)."""

    @staticmethod
    def of(res, n: int):
        from mllm_rft.evaluate import EvalResult

        return EvalResult(res.accuracy, res.format_rate, res.mean_length, res.scores[:n], res.completions[:n])


def main(argv: Sequence[str] | None = None) -> int:
    top, subs = _parsers()
    args = top.parse_args(argv)
    if args.command == "eval":
        return _eval(args, subs["eval"])
    if args.command == "sft":
        cfg = config_from_args(SFTConfig, args, subs["sft"])
        if cfg is None:
            return 0
        from mllm_rft.sft import run_sft

        summary = run_sft(cfg)
        for k, v in summary.items():
            if isinstance(v, dict):
                print(f"{k}: accuracy {v['accuracy']:.3f}, format {v['format_rate']:.3f}, length {v['length']:.1f}")
        print(f"saved to {cfg.out}")
        return 0
    cfg = config_from_args(RFTConfig, args, subs["train"])
    if cfg is None:  # --print-config
        return 0
    from mllm_rft.trainer import iter_eval_lines, train

    summary = train(cfg)
    for line in iter_eval_lines(summary):
        print(line)
    print(f"run folder: {cfg.run.dir}")
    return 0
