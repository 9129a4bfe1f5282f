"""Offline visual question tasks on the shapes world, and loaders for local datasets (mllm_rft.md §4–5).

Card §4: perception tasks (counting, grounding, classification) show the largest, fastest RL gains and have exact
verifiers; card §5 builds their offline stand-ins on the shapes world, with OOD splits by construction (card §1,
direction 1: "unseen counts, colour/shape combinations", as SuperCLEVR is to CLEVR).

    samples = make_split("counting", "train", 256, seed=0)       # list[Sample], deterministic in (task, split, seed)
    verify(samples[0], "<think>…</think><answer>3</answer>")      # 1.0, scored by rewards.get_reward(sample.reward)

Every answer is computed from what the renderer drew (`shared.shapes.render_scene`'s `PlacedShape` list: shape,
colour, pixel box), never from a caption.

- counting: "How many [colour] <shape>s are in the image?" with 0..`max_distractors` other objects → "3"; `count`.
  `counting_shape` never names the colour, `counting_colour` always does (the committed base learns the first,
  GRPO trains the second).
- attribute: "What colour is the <shape>?" or "What shape is the <colour> object?" on 1- or 2-object scenes whose
  objects differ in shape and colour → "red" / "circle"; `label`.
- spatial: "Is the <colour> <shape> left of the <colour> <shape>?" → "yes"/"no", or "Is the … to the left or to the
  right of the …?" / "… above or below …" → "left"/"right"/"above"/"below"; `exact_match`.
- grounding: "Give the bounding box of the <colour> <shape>." among 1–3 objects of distinct colour × shape →
  "[x0, y0, x1, y1]", target the box as a list of ints; `iou`.

Boxes are `PlacedShape.box` in pixels of the rendered image, (x0, y0, x1, y1) with x1/y1 exclusive (the detector's
convention, `shared.shapes.detect`); no rescaling (the `iou` reward rescales only when given `input_size`).

Splits [our reading: the card names the OOD idea, the exact hold-outs are ours]:

- "train" and "test": the same distribution, drawn from disjoint seed streams (`SeedSequence([seed, split, task, i])`).
- "ood": every task asks about objects whose colour × shape pair is in `HELD_OUT_PAIRS` (6 of the 18 pairs, one per
  colour, so every colour and every shape is still seen in training); distractors stay seen pairs. Counting counts
  held-out-pair objects, attribute and grounding query one, spatial draws both objects from them. No object of a
  train/test scene has a held-out pair. Counting keeps the same counts (`COUNTS`, 1–3) in all splits: a model that
  never wrote "4" in supervised training cannot be rewarded for it, so unseen counts would measure nothing RL can
  change [our reading; an earlier version held out counts 4–5].

Loaders `load_jsonl` / `load_parquet` read local copies of the common layouts (card §4: Geometry3K, CLEVR counting,
RefCOCO-style REC) into the same `Sample`; a missing column raises before any image is opened.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.errors import ConfigError, PromptFileError
from shared.shapes.render import PlacedShape, render_scene
from shared.shapes.vocab import COLOR_NAMES, RELATIONS, SHAPES, plural

from mllm_rft.rewards import extract_answer, get_reward, parse_box

__all__ = [
    "COUNTS",
    "HELD_OUT_PAIRS",
    "SPLITS",
    "TASKS",
    "Sample",
    "available_tasks",
    "load_jsonl",
    "load_parquet",
    "make_split",
    "verify",
]

SPLITS: tuple[str, ...] = ("train", "test", "ood")
COUNTS: tuple[int, ...] = (1, 2, 3)
# One held-out shape per colour, cycling through the shapes: (circle, red), (square, orange), (triangle, yellow),
# (circle, green), (square, blue), (triangle, purple). Every shape keeps 4 colours and every colour 2 shapes in train.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (SHAPES[j % len(SHAPES)], c) for j, c in enumerate(COLOR_NAMES)
)
_SEEN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (s, c) for s in SHAPES for c in COLOR_NAMES if (s, c) not in HELD_OUT_PAIRS
)
_OOD_PAIRS: tuple[tuple[str, str], ...] = tuple(sorted(HELD_OUT_PAIRS))
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_SIDE_WORD = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
_RENDER_TRIES = 10


@dataclass
class Sample:
    """One visual question: the image, the question text, the gold answer text, and how to score a completion.

    `reward` is a `mllm_rft.rewards` registry name; `target` is what that reward receives as its gold (a count string,
    a label, or a box [x0, y0, x1, y1] in pixels of `image`). `meta` holds the scene (`objects`: the drawn shapes),
    the split, the seed and task-specific facts.
    """

    image: Image.Image
    question: str
    answer: str
    task: str
    reward: str
    target: Any
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ scene helpers
def _record(objects: Sequence[Mapping[str, Any]], tag: str) -> dict:
    """A GenEval-schema record drawing exactly `objects` (each {class, color[, position]}), one include entry each."""
    include = [{"count": 1, **o} for o in objects]
    return {"tag": tag, "include": include, "prompt": f"shapes-world {tag} scene"}


def _render(record: dict, size: int, rng: np.random.Generator) -> tuple[Image.Image, list[PlacedShape]]:
    for _ in range(_RENDER_TRIES):
        try:
            return render_scene(record, size=size, rng=rng)
        except RuntimeError:
            continue
    raise RuntimeError(f"could not place {len(record['include'])} objects at image_size={size}; use a larger image")


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _pairs(ood: bool) -> tuple[tuple[str, str], ...]:
    return _OOD_PAIRS if ood else _SEEN_PAIRS


def _distinct_pairs(rng: np.random.Generator, first: tuple[str, str], k: int) -> list[tuple[str, str]]:
    """`k` seen pairs differing from `first` and from each other in both shape and colour (k ≤ 2)."""
    out: list[tuple[str, str]] = []
    for _ in range(k):
        used = [first, *out]
        pool = [p for p in _SEEN_PAIRS if all(p[0] != u[0] and p[1] != u[1] for u in used)]
        if not pool:
            break
        out.append(_pick(rng, pool))
    return out


def _matching(placed: Iterable[PlacedShape], shape: str, color: str | None = None) -> list[PlacedShape]:
    return [p for p in placed if p.shape == shape and (color is None or p.color == color)]


def _scene_meta(placed: Sequence[PlacedShape], size: int) -> dict:
    return {"objects": [p.as_dict() for p in placed], "image_size": [size, size]}


# ------------------------------------------------------------------------------------------------------------ tasks
TaskFn = Callable[..., Sample]
TASKS: dict[str, TaskFn] = {}
_STREAMS: dict[str, int] = {}


def _task(name: str, stream: int) -> Callable[[TaskFn], TaskFn]:
    """Register a task; `stream` is its fixed index in the sample seeds (`make_split`), so adding a task never
    changes the samples of another. The counting variants share counting's stream."""

    def deco(fn: TaskFn) -> TaskFn:
        TASKS[name], _STREAMS[name] = fn, stream
        return fn

    return deco


def available_tasks() -> list[str]:
    """Names accepted by `make_split`, sorted."""
    return sorted(TASKS)


@_task("counting", stream=1)
def _counting(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int) -> Sample:
    """CLEVR-style counting (card §4): n ∈ `COUNTS` target objects of one shape (of one named colour half the time),
    their colour × shape pairs held out in "ood" and seen otherwise, plus 0..`max_distractors` seen-pair distractors
    that the question does not count. Reward `count`."""
    return _count_question(rng, ood=ood, size=size, max_distractors=max_distractors, p_colour=0.5,
                           task="counting")


@_task("counting_shape", stream=1)
def _counting_shape(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int) -> Sample:
    """`counting` that never names a colour ("How many circles …?"): a base for `counting_colour`."""
    return _count_question(rng, ood=ood, size=size, max_distractors=max_distractors, p_colour=0.0,
                           task="counting_shape")


@_task("counting_colour", stream=1)
def _counting_colour(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int) -> Sample:
    """`counting` that always names the colour ("How many red circles …?"): distractors may share the shape in
    another colour, so a model must count by shape and colour together."""
    return _count_question(rng, ood=ood, size=size, max_distractors=max_distractors, p_colour=1.0,
                           task="counting_colour")


def _count_question(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int, p_colour: float,
                    task: str) -> Sample:
    """The counting scene and question; the colour is named with probability `p_colour`. The draw is made even at
    p_colour 0 or 1, so `counting` keeps the samples it had before the two variants existed."""
    n = int(_pick(rng, COUNTS))
    pairs = _pairs(ood)
    shape, named = _pick(rng, pairs)
    color = named if rng.random() < p_colour else None
    colours = [c for s, c in pairs if s == shape]
    objects = [{"class": shape, "color": color or _pick(rng, colours)} for _ in range(n)]
    others = [(s, c) for s, c in _SEEN_PAIRS if s != shape or (color is not None and c != color)]
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        s, c = _pick(rng, others)
        objects.append({"class": s, "color": c})
    image, placed = _render(_record(objects, "counting"), size, rng)
    count = len(_matching(placed, shape, color))
    noun = f"{color} {plural(shape)}" if color else plural(shape)
    meta = {**_scene_meta(placed, size), "shape": shape, "color": color, "count": count}
    return Sample(image, f"How many {noun} are in the image?", str(count), task, "count", str(count), meta)


@_task("attribute", stream=0)
def _attribute(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int) -> Sample:
    """Attribute recognition (card §4 classification, on the shapes world): one queried object (a held-out pair in
    "ood") and 0–1 other objects differing from it in shape and colour. Reward `label`."""
    shape, color = _pick(rng, _pairs(ood))
    others = _distinct_pairs(rng, (shape, color), int(rng.integers(0, min(1, max_distractors) + 1)))
    objects = [{"class": s, "color": c} for s, c in [(shape, color), *others]]
    order = rng.permutation(len(objects))
    image, placed = _render(_record([objects[i] for i in order], "color_attr"), size, rng)
    asked = "color" if rng.random() < 0.5 else "shape"
    if asked == "color":
        (obj,) = _matching(placed, shape)  # unique: the other objects have other shapes
        question, answer = f"What colour is the {shape}?", obj.color
    else:
        (obj,) = [p for p in placed if p.color == color]
        question, answer = f"What shape is the {color} object?", obj.shape
    meta = {**_scene_meta(placed, size), "asked": asked, "query": [obj.shape, obj.color]}
    return Sample(image, question, answer, "attribute", "label", answer, meta)


def _robust_relations(a: PlacedShape, b: PlacedShape) -> set[str]:
    """Relations of a to b that hold on both box centres and area centroids at the renderer's 0.3 margin
    (`shared.shapes.verify.relations`); a relation outside this set and its opposite is treated as undecidable."""
    from shared.shapes.render import RENDER_POSITION_THRESHOLD
    from shared.shapes.verify import relations

    dims_a, dims_b = (a.side, a.side), (b.side, b.side)
    sets = [
        relations(pa, dims_a, pb, dims_b, threshold=RENDER_POSITION_THRESHOLD)
        for pa, pb in ((a.center, b.center), (a.centroid, b.centroid))
    ]
    return sets[0] & sets[1]


@_task("spatial", stream=3)
def _spatial(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int) -> Sample:
    """Spatial relations (GenEval's four, read off the drawn boxes): two objects differing in shape and colour (both
    held-out pairs in "ood"). Half yes/no questions (balanced yes/no), half "which side" questions. Reward
    `exact_match`. The scene is laid out with a random relation; the answer is recomputed from the placed boxes."""
    pool = _pairs(ood)
    pa = _pick(rng, pool)
    pb = _pick(rng, [p for p in pool if p[0] != pa[0] and p[1] != pa[1]])
    rel = _pick(rng, RELATIONS)
    b_obj = {"class": pb[0], "color": pb[1]}
    a_obj = {"class": pa[0], "color": pa[1], "position": [rel, 0]}
    image, placed = _render(_record([b_obj, a_obj], "position"), size, rng)
    (a,) = _matching(placed, *pa)
    (b,) = _matching(placed, *pb)
    held = sorted(_robust_relations(a, b))
    if not held:  # pragma: no cover - the renderer enforces `rel` with the same margin
        raise RuntimeError("rendered scene has no decidable relation")
    name_a, name_b = f"the {pa[1]} {pa[0]}", f"the {pb[1]} {pb[0]}"
    if rng.random() < 0.5:
        true_rel = _pick(rng, held)
        asked_rel, answer = (true_rel, "yes") if rng.random() < 0.5 else (_OPPOSITE[true_rel], "no")
        question = f"Is {name_a} {asked_rel} {name_b}?"
        kind = "yes_no"
    else:
        true_rel = _pick(rng, held)
        if true_rel in ("left of", "right of"):
            question = f"Is {name_a} to the left or to the right of {name_b}?"
        else:
            question = f"Is {name_a} above or below {name_b}?"
        asked_rel, answer, kind = true_rel, _SIDE_WORD[true_rel], "which_side"
    meta = {**_scene_meta(placed, size), "kind": kind, "relation": asked_rel, "a": list(pa), "b": list(pb)}
    return Sample(image, question, answer, "spatial", "exact_match", answer, meta)


@_task("grounding", stream=2)
def _grounding(rng: np.random.Generator, *, ood: bool, size: int, max_distractors: int) -> Sample:
    """Referring-expression grounding (card §3–4, VLM-R1 REC): the box of the named object (a held-out pair in
    "ood") among 0..min(2, max_distractors) others of distinct shape and colour, in pixels of the image. Reward
    `iou`."""
    shape, color = _pick(rng, _pairs(ood))
    others = _distinct_pairs(rng, (shape, color), int(rng.integers(0, min(2, max_distractors) + 1)))
    objects = [{"class": s, "color": c} for s, c in [(shape, color), *others]]
    order = rng.permutation(len(objects))
    image, placed = _render(_record([objects[i] for i in order], "color_attr"), size, rng)
    (obj,) = _matching(placed, shape, color)
    box = [int(v) for v in obj.box]
    answer = "[" + ", ".join(str(v) for v in box) + "]"
    meta = {**_scene_meta(placed, size), "query": [shape, color]}
    return Sample(image, f"Give the bounding box of the {color} {shape}.", answer, "grounding", "iou", box, meta)


# ------------------------------------------------------------------------------------------------------------ splits
def make_split(
    task: str, split: str, n: int, *, seed: int, image_size: int = 64, max_distractors: int = 2
) -> list[Sample]:
    """`n` samples of `task` for `split` ("train", "test", "ood"; module doc), deterministic in all arguments.

    Sample i draws from `numpy.random.default_rng(SeedSequence([seed, split index, task stream, i]))`, so train and
    test of the same seed never share a stream, and the first k samples do not depend on n. `max_distractors`
    (≥ 0) bounds the extra objects (counting: up to that many; attribute: up to 1; grounding: up to 2; spatial: none).
    """
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: unknown; expected one of {available_tasks()}")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: unknown; expected one of {list(SPLITS)}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ConfigError(f"n={n!r}: expected a non-negative integer")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r}: expected a non-negative integer")
    if not isinstance(max_distractors, (int, np.integer)) or max_distractors < 0:
        raise ConfigError(f"max_distractors={max_distractors!r}: expected a non-negative integer")
    fn, task_id, split_id = TASKS[task], _STREAMS[task], SPLITS.index(split)
    out = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_id, task_id, i]))
        sample = fn(rng, ood=split == "ood", size=image_size, max_distractors=int(max_distractors))
        sample.meta.update(split=split, seed=int(seed), index=i)
        out.append(sample)
    return out


def verify(sample: Sample, answer_text: str) -> float:
    """Score a model completion with the sample's reward: `rewards.get_reward(sample.reward)(answer_text, target)`.

    The completion is read as the rewards read it (card §3): the answer is the content of the last
    `<answer>…</answer>`; text without an answer block scores 0. A reward that skips (None) scores 0 here.
    """
    value = get_reward(sample.reward)(answer_text, sample.target)
    return 0.0 if value is None else float(value)


# ----------------------------------------------------------------------------------------------------------- loaders
def _check_columns(columns: Iterable[str], keys: Mapping[str, str], where: str) -> None:
    present = list(columns)
    for role, key in keys.items():
        if key not in present:
            raise PromptFileError(
                f"{where}: missing column {key!r} (the {role}); columns present: {present}. "
                f"Pass {role}=<one of these>."
            )


def _open_image(value: Any, image_root: Path | None, where: str) -> tuple[Image.Image, int]:
    """PIL RGB image from a path (relative to `image_root`), bytes, a {bytes|path} dict (Hugging Face parquet) or
    a list of those (the first is used; the count is returned)."""
    n = 1
    if isinstance(value, np.ndarray):
        value = list(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise PromptFileError(f"{where}: empty image list")
        n, value = len(value), value[0]
    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        with Image.open(io.BytesIO(value)) as im:
            return im.convert("RGB"), n
    if not isinstance(value, str) or not value:
        raise PromptFileError(f"{where}: cannot read an image from {type(value).__name__} {value!r}")
    path = Path(value)
    if not path.is_absolute() and image_root is not None:
        path = Path(image_root) / path
    if not path.is_file():
        raise PromptFileError(f"{where}: image file {str(path)!r} not found (image_root={image_root!s})")
    with Image.open(path) as im:
        return im.convert("RGB"), n


def _gold(answer: Any, reward: str, where: str) -> tuple[str, Any]:
    """(answer text, reward target). `<answer>…</answer>` wrappers (R1-V/VLM-R1 `solution`) are stripped; for `iou`
    the target is the box (a list of 4 numbers or the first `[x1, y1, x2, y2]` in the text)."""
    if isinstance(answer, np.ndarray):
        answer = answer.tolist()
    if reward.startswith("iou") and isinstance(answer, (list, tuple)):
        box = [float(v) for v in answer]
        return "[" + ", ".join(f"{v:g}" for v in box) + "]", box
    text = str(answer)
    inner = extract_answer(text)
    text = inner if inner is not None else text.strip()
    if reward.startswith("iou"):
        box = parse_box(text)
        if box is None:
            raise PromptFileError(f"{where}: answer {text!r} holds no box [x1, y1, x2, y2] for reward {reward!r}")
        return text, list(box)
    return text, text


def _samples(rows: list[Mapping[str, Any]], where: str, **kw: Any) -> list[Sample]:
    keys = {"question_key": kw["question_key"], "answer_key": kw["answer_key"], "image_key": kw["image_key"]}
    reward, task = kw["reward"], kw["task"]
    fn = get_reward(reward)  # an unknown reward fails before any image is read
    golds = []
    for i, row in enumerate(rows):
        _check_columns(row.keys(), keys, f"{where} row {i}")
        text, target = _gold(row[keys["answer_key"]], reward, f"{where} row {i}")
        try:
            fn(f"<answer>{text}</answer>", target)  # a malformed gold (e.g. a non-integer count) raises here
        except ValueError as e:
            msg = f"{where} row {i}: gold answer {text!r} is invalid for reward {reward!r}: {e}"
            raise PromptFileError(msg) from None
        golds.append((text, target))
    out = []
    root = None if kw["image_root"] is None else Path(kw["image_root"])
    for i, (row, (text, target)) in enumerate(zip(rows, golds)):
        image, n_images = _open_image(row[keys["image_key"]], root, f"{where} row {i}")
        meta = {"source": where, "index": i, "n_images": n_images}
        out.append(Sample(image, str(row[keys["question_key"]]), text, task, reward, target, meta))
    return out


def load_jsonl(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    question_key: str = "problem",
    answer_key: str = "answer",
    image_key: str = "image",
    reward: str = "exact_match",
    task: str = "external",
) -> list[Sample]:
    """Samples from a local JSON-lines file, one object per line (card §4 datasets, local copies).

    Typical layouts [our reading; check the column names of your copy]: Geometry3K (`problem`, `answer`, `images`,
    reward `numeric` or `exact_match`); CLEVR counting as in R1-V (`problem`, `solution` = "<answer>3</answer>",
    `image`, reward `count`); RefCOCO-style REC as in VLM-R1 (`problem`, `solution` with the box, `image`, reward
    `iou`). Image values are paths relative to `image_root` (or absolute), raw bytes, `{"bytes"|"path": …}` dicts,
    or lists of those (the first image is used; `meta["n_images"]` keeps the count). Every row's columns and gold
    answer are checked before any image is opened: a missing column raises `PromptFileError` naming it and the
    columns present.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{str(path)!r}: file not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise PromptFileError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise PromptFileError(f"{str(path)!r}: no rows")
    return _samples(
        rows, str(path), image_root=image_root, question_key=question_key, answer_key=answer_key,
        image_key=image_key, reward=reward, task=task,
    )


def load_parquet(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    question_key: str = "problem",
    answer_key: str = "answer",
    image_key: str = "image",
    reward: str = "exact_match",
    task: str = "external",
) -> list[Sample]:
    """`load_jsonl` for a local parquet file (Hugging Face dataset shards store images as {bytes, path} structs).

    pandas (with pyarrow) is imported only here; columns are checked on the table before any row is converted.
    """
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - pandas is present in the workspace environment
        raise ImportError("load_parquet needs pandas and pyarrow: `uv add pandas pyarrow`") from e
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{str(path)!r}: file not found")
    df = pd.read_parquet(path)
    keys = {"question_key": question_key, "answer_key": answer_key, "image_key": image_key}
    _check_columns(df.columns, keys, str(path))
    return _samples(
        df.to_dict("records"), str(path), image_root=image_root, question_key=question_key,
        answer_key=answer_key, image_key=image_key, reward=reward, task=task,
    )
