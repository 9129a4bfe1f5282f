"""Sample the shapes-world base model and score it GenEval-style.

The base is a tiny pixel-space SD3 pipeline pretrained on rendered shapes (``tools/train_shapes_base.py``,
committed under ``assets/shapes_base``). This module draws images for the fixed, seeded evaluation
prompt set with the deterministic ODE sampler (noise level 0), writes them in GenEval's folder layout,
scores every image with the exact pixel verifier and prints the per-category and overall score::

    uv run python -m shared.demo --model assets/shapes_base --out outputs/shapes_base_eval

Outputs: ``<out>/00000/metadata.jsonl``, ``<out>/00000/samples/0000.png``…, ``<out>/results.jsonl``,
``<out>/summary.json`` and ``<out>/overview.png`` (one sample per prompt with its verdict).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

DEFAULT_MODEL = "assets/shapes_base"


def resolve_model(path: str | Path, *, rebuild: str = "tools/train_shapes_base.py") -> Path:
    """``path`` as given, else (for a committed default such as ``assets/shapes_base``) the copy in this checkout;
    clear error if neither exists. ``rebuild`` names the script that recreates the committed folder."""
    p = Path(path)
    if p.is_dir():
        return p
    in_checkout = Path(__file__).resolve().parents[3] / path
    if not p.is_absolute() and in_checkout.is_dir():
        return in_checkout
    raise FileNotFoundError(
        f"model folder {path} not found; pass a local model folder (save_pretrained layout), e.g. a committed "
        f"assets/ folder of the repository, or rebuild it with {rebuild}"
    )


def generate_for_records(pipe, records: list[dict], *, images_per_prompt: int, num_steps: int, guidance_scale: float,
                         seed: int, batch_size: int = 64, progress: bool = True) -> list[torch.Tensor]:
    """Images (N, 3, H, W) in [0, 1] for each record, drawn with the deterministic ODE sampler."""
    from shared.rollout import SamplerConfig, adapter_for, sample

    adapter = adapter_for(pipe)
    size = pipe.transformer.config.sample_size * adapter.vae_scale_factor
    cfg = SamplerConfig(num_steps=num_steps, noise_level=0.0, guidance_scale=guidance_scale, height=size, width=size,
                        micro_batch_size=batch_size)
    gen = torch.Generator().manual_seed(seed)
    prompts = [r["prompt"] for r in records]
    out: list[torch.Tensor] = []
    per_call = max(1, batch_size // images_per_prompt)
    chunks = range(0, len(prompts), per_call)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="sampling", unit="batch")
    for i in chunks:
        traj = sample(adapter, prompts[i:i + per_call], cfg, group_size=images_per_prompt, generator=gen)
        out.extend(traj.images.split(images_per_prompt))
    return out


def evaluate_base(model: str | Path = DEFAULT_MODEL, *, per_tag: int = 16, images_per_prompt: int = 4, num_steps: int = 20,
                  guidance_scale: float = 4.0, seed: int = 0, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """GenEval-style score of a pipeline folder on the fixed shapes evaluation set."""
    from shared.rollout.loading import load_pipeline
    from shared.shapes.geneval import evaluate_folder, write_samples
    from shared.shapes.prompts import eval_prompts

    pipe = load_pipeline(resolve_model(model), torch_dtype=torch.float32)
    records = eval_prompts(per_tag=per_tag)
    images = generate_for_records(pipe, records, images_per_prompt=images_per_prompt, num_steps=num_steps,
                                  guidance_scale=guidance_scale, seed=seed, progress=progress)
    out = Path(out_dir) if out_dir is not None else Path("outputs") / "shapes_base_eval"
    write_samples(out, records, images, grid=True)
    summary = evaluate_folder(out)
    summary["settings"] = {"model": str(model), "per_tag": per_tag, "images_per_prompt": images_per_prompt,
                           "num_steps": num_steps, "guidance_scale": guidance_scale, "seed": seed, "sampler": "ODE (noise level 0)"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _verdict_grid(out, records, images)
    return summary


def _verdict_grid(out: Path, records: list[dict], images: list[torch.Tensor]) -> None:
    """One sample per prompt, captioned with the prompt and ✓/✗ from results.jsonl."""
    from shared.training.plots import save_image_grid

    verdicts = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        verdicts.setdefault(r["prompt"], r["correct"])
    first = torch.stack([imgs[0] for imgs in images])
    caps = [("OK " if verdicts.get(r["prompt"]) else "NO ") + r["prompt"].removeprefix("a photo of ") for r in records]
    save_image_grid(first, out / "overview.png", captions=caps, nrow=12, scale=3)


def format_summary(summary: dict) -> str:
    rows = [f"{'category':<16} {'score':>6}"] + [f"{k:<16} {v:6.3f}" for k, v in summary["per_tag"].items()]
    rows.append(f"{'overall':<16} {summary['overall']:6.3f}")
    return "\n".join(rows)


def write_report(summary: dict, out_dir: Path, prefix: Path, command: str) -> None:
    """``<prefix>.md`` (table), ``<prefix>.json`` (summary) and ``<prefix>.png`` (the overview grid)."""
    import shutil

    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    shutil.copyfile(out_dir / "overview.png", prefix.with_suffix(".png"))
    s = summary["settings"]
    table = ["| category | score | correct / images |", "|---|---|---|"]
    for tag, score in summary["per_tag"].items():
        ok, n = summary["per_tag_counts"][tag]
        table.append(f"| {tag} | {score:.3f} | {ok} / {n} |")
    table.append(f"| **overall** (mean of categories) | **{summary['overall']:.3f}** | |")
    prefix.with_suffix(".md").write_text(
        "# Shapes-world base: GenEval-style score\n\n"
        f"Command: `{command}`\n\n"
        f"{s['per_tag']} prompts per category × {s['images_per_prompt']} images, {s['sampler']}, {s['num_steps']} steps, "
        f"CFG {s['guidance_scale']}, seed {s['seed']}. Verdicts come from the exact pixel verifier in `shared.shapes`.\n\n"
        + "\n".join(table)
        + f"\n\nOne sample per prompt with its verdict: [{prefix.with_suffix('.png').name}]({prefix.with_suffix('.png').name})\n"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m shared.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="pipeline folder (save_pretrained layout); default: the committed shapes base")
    p.add_argument("--out", default="outputs/shapes_base_eval", help="folder for samples (GenEval layout), results.jsonl, summary.json, overview.png")
    p.add_argument("--per-tag", type=int, default=16, help="evaluation prompts per GenEval category (6 categories)")
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="ODE sampling steps")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", default=None, help="also write <REPORT>.md/.json/.png (e.g. docs/results/shapes_base)")
    args = p.parse_args(argv)
    if args.per_tag < 1 or args.images_per_prompt < 1 or args.steps < 1:
        p.error("--per-tag, --images-per-prompt and --steps must be ≥ 1")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    summary = evaluate_base(args.model, per_tag=args.per_tag, images_per_prompt=args.images_per_prompt, num_steps=args.steps,
                            guidance_scale=args.guidance, seed=args.seed, out_dir=args.out)
    print(format_summary(summary))
    if args.report:
        import sys

        write_report(summary, Path(args.out), Path(args.report), "uv run python -m shared.demo " + " ".join(sys.argv[1:] if argv is None else argv))
        print(f"report in {args.report}.md")
    print(f"samples, results.jsonl, summary.json and overview.png in {args.out} ({time.time() - t0:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
