"""Build the tiny Qwen2-VL that `mllm-rft train` starts from: tokenizer + weights + processor in assets/shapes_vlm.

The committed checkpoint is `mllm-rft sft` with the `shapes` preset (mllm_rft.sft): a byte-level BPE tokenizer
trained on the task texts, a Qwen2-VL built from a small config (about 1 M parameters, 4 MB), supervised on
reference completions `<think>…</think><answer>…</answer>` of two shapes-world tasks, counting by shape
(`counting_shape`) and attribute questions (1500 steps of 32; about 7 minutes on 2 CPU cores). It is never shown
counting by colour and shape (`counting_colour`), the task the default GRPO run trains: it answers that near chance
(0.34 held-out) while counting by shape at 0.55 and naming attributes at 0.85.

    uv run python tools/train_shapes_vlm.py --out assets/shapes_vlm [--steps N] [--threads 1]

Writes the save_pretrained folder plus `sft.json` (config and held-out / OOD greedy accuracy per task) and
`losses.json`. Deterministic for a given seed on the same machine and torch build.
"""

from __future__ import annotations

import argparse

from shared.training import load_config

from mllm_rft.config import SFTConfig
from mllm_rft.sft import run_sft


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/shapes_vlm", help="output folder")
    p.add_argument("--steps", type=int, default=None, help="SFT steps (default: the preset's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="further SFTConfig overrides (see `mllm-rft sft --help`)")
    args = p.parse_args()
    overrides = [f"out={args.out}", f"threads={args.threads}", *args.overrides]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    summary = run_sft(load_config(SFTConfig, preset="shapes", overrides=overrides))
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
