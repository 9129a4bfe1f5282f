"""GenEval's file formats, so a real GenEval run and a shapes run are interchangeable (shared_core.md §11).

[authors' code: `djghosh13/geneval` README, `prompts/create_prompts.py`, `evaluation/evaluate_images.py`]

- metadata: `evaluation_metadata.jsonl`, one JSON record per line (`prompts.validate_record` for the schema);
- samples:  `<folder>/00000/metadata.jsonl` (that prompt's record as one JSON line), `<folder>/00000/samples/0000.png`,
  …, optional `<folder>/00000/grid.png`; GenEval reads only all-digit subfolders and `<digits>.png` samples;
- results:  `results.jsonl`, one line per image with GenEval's fields `filename`, `tag`, `prompt`, `correct` (bool),
  `reason` (failure lines, "" when correct), `metadata` (the record as a JSON string), `details` (JSON string: our
  detected objects, per-condition outcomes and partial-credit score, where GenEval stores its boxes);
- summary: `score.summarize` (per-tag means; overall = mean of the tag means).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image

from shared.errors import PromptFileError
from shared.imaging import save_image_grid, to_pil_images
from shared.shapes.prompts import validate_record
from shared.shapes.score import summarize
from shared.shapes.verify import verify

__all__ = ["write_metadata", "read_metadata", "write_samples", "read_samples", "evaluate_folder", "summarize"]

_SAMPLE = re.compile(r"^\d+\.png$")


def write_metadata(path: str | Path, records: Sequence[dict], *, shapes_only: bool = True) -> Path:
    """Write records as GenEval `evaluation_metadata.jsonl` (validated first; nothing is written if one is bad)."""
    path = Path(path)
    for i, rec in enumerate(records):
        try:
            validate_record(rec, shapes_only=shapes_only)
        except ValueError as e:
            raise PromptFileError(f"{path}: record {i} is not a valid GenEval record: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_metadata(path: str | Path, *, shapes_only: bool = True) -> list[dict]:
    """Read and validate a GenEval metadata JSONL file (blank lines are skipped).

    A missing or empty file, a line that is not JSON or a record that breaks the schema raises `PromptFileError`
    naming the file, the line number and what is wrong. `shapes_only=False` accepts any class/colour words (real
    GenEval COCO metadata); the default also requires the shapes vocabulary.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(
            f"{path}: metadata file not found; expected a JSONL file with one GenEval record per line "
            "(write one with shared.shapes.write_metadata(path, eval_prompts()))"
        )
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            try:
                validate_record(rec, shapes_only=shapes_only)
            except ValueError as e:
                raise PromptFileError(f"{path}:{lineno}: invalid GenEval record: {e}") from None
            records.append(rec)
    if not records:
        raise PromptFileError(f"{path}: file is empty; expected one GenEval record per line")
    return records


def write_samples(
    folder: str | Path, records: Sequence[dict], images_per_record: Sequence[Sequence], *, grid: bool = True
) -> Path:
    """Write GenEval's sample layout: `<folder>/<i:05d>/metadata.jsonl`, `samples/<j:04d>.png`, optional `grid.png`.

    `images_per_record[i]` holds the images of record i (PIL, numpy HWC uint8 or torch CHW float in [0, 1]).
    """
    folder = Path(folder)
    if len(records) != len(images_per_record):
        raise ValueError(f"{len(records)} records but {len(images_per_record)} image lists")
    for i, (rec, images) in enumerate(zip(records, images_per_record)):
        if not len(images):
            raise ValueError(f"record {i} ({rec.get('prompt')!r}) has no images")
        sub = folder / f"{i:05d}"
        (sub / "samples").mkdir(parents=True, exist_ok=True)
        (sub / "metadata.jsonl").write_text(json.dumps(rec) + "\n")
        pil = to_pil_images(list(images))
        for j, im in enumerate(pil):
            im.save(sub / "samples" / f"{j:04d}.png")
        if grid:
            save_image_grid(pil, sub / "grid.png")
    return folder


def _prompt_folders(folder: Path) -> Iterator[tuple[Path, dict, list[Path]]]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: sample folder not found; expected GenEval layout <folder>/00000/samples/0000.png"
        )
    subs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not subs:
        raise PromptFileError(f"{folder}: no prompt subfolders (00000, 00001, …) found")
    for sub in subs:
        meta = sub / "metadata.jsonl"
        recs = read_metadata(meta, shapes_only=False)
        if len(recs) != 1:
            raise PromptFileError(f"{meta}: expected exactly one record, found {len(recs)}")
        samples = sub / "samples"
        paths = (
            sorted((p for p in samples.iterdir() if p.is_file() and _SAMPLE.match(p.name)), key=lambda p: int(p.stem))
            if samples.is_dir()
            else []
        )
        yield sub, recs[0], paths


def read_samples(folder: str | Path) -> Iterator[tuple[dict, list[Image.Image]]]:
    """Yield (record, [RGB images]) per prompt subfolder, in numeric order."""
    for _, rec, paths in _prompt_folders(Path(folder)):
        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        yield rec, images


def evaluate_folder(folder: str | Path, results_path: str | Path | None = None, **verify_kwargs) -> dict:
    """Verify every sample of a GenEval-layout folder, write `results.jsonl` (default `<folder>/results.jsonl`)
    with one line per image, and return the summary (`summarize`) with "results_path" added."""
    folder = Path(folder)
    results_path = Path(results_path) if results_path is not None else folder / "results.jsonl"
    rows = []
    for _, rec, paths in _prompt_folders(folder):
        try:
            validate_record(rec)
        except ValueError as e:
            raise PromptFileError(
                f"{folder}: record {rec.get('prompt')!r} is outside the shapes vocabulary: {e}"
            ) from None
        for p in paths:
            with Image.open(p) as im:
                res = verify(im.convert("RGB"), rec, **verify_kwargs)
            rows.append(
                {
                    "filename": str(p),
                    "tag": rec["tag"],
                    "prompt": rec["prompt"],
                    "correct": res.correct,
                    "reason": res.reason,
                    "metadata": json.dumps(rec),
                    "details": json.dumps(res.details),
                }
            )
    if not rows:
        raise PromptFileError(f"{folder}: no samples/<n>.png images found in any prompt subfolder")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = summarize(rows)
    summary["results_path"] = str(results_path)
    return summary
