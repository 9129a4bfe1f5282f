"""Prompts of the shapes world as GenEval metadata records (shared_core.md §11).

A record is a plain dict with exactly the schema of GenEval's `evaluation_metadata.jsonl`
[authors' code: `djghosh13/geneval` `prompts/create_prompts.py`]:

    {"tag": "position",
     "include": [{"class": "square", "count": 1},
                 {"class": "circle", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a circle left of a square"}

`include` entries: `class`, `count`, optional `color`, optional `position` = [relation, index of the reference entry];
`exclude` (counting only) = [{"class", "count": n + 1}] forbids extra objects. Phrasing per tag, as GenEval's generator:

    single_object  "a photo of a circle"
    two_object     "a photo of a square and a circle"            (two different shapes)
    counting       "a photo of three squares"                     (2–4)
    colors         "a photo of a red square"
    position       "a photo of a circle left of a square"         (include[0] is the reference "square")
    color_attr     "a photo of a red square and a blue circle"    (different shapes, different colours)

The grammar is closed: `all_prompts()` enumerates it (240 records), `parse_prompt` inverts the phrasing exactly.
GenEval stores `position` as a JSON list; we use lists throughout so records round-trip through JSON unchanged.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from shared.errors import PromptFileError
from shared.shapes.vocab import (
    COLOR_NAMES,
    COUNT_WORDS,
    PLURALS,
    RELATIONS,
    SHAPES,
    SINGULARS,
    TAGS,
    WORD_COUNTS,
    with_article,
)

PREFIX = "a photo of "
EVAL_SEED = 43  # GenEval's default `--seed` in create_prompts.py; our fixed evaluation set uses it too.
EVAL_PER_TAG = 16  # 6 tags × 16 = 96 prompts.

_GRAMMAR_EXAMPLES = (
    "'a photo of a circle', 'a photo of a square and a circle', 'a photo of three squares', "
    "'a photo of a red square', 'a photo of a circle left of a square', "
    "'a photo of a red square and a blue circle'"
)


# ----------------------------------------------------------------------------------------------- record builders
def single_object(shape: str) -> dict:
    return {"tag": "single_object", "include": [{"class": shape, "count": 1}], "prompt": PREFIX + with_article(shape)}


def two_object(shape_a: str, shape_b: str) -> dict:
    return {
        "tag": "two_object",
        "include": [{"class": shape_a, "count": 1}, {"class": shape_b, "count": 1}],
        "prompt": f"{PREFIX}{with_article(shape_a)} and {with_article(shape_b)}",
    }


def counting(shape: str, n: int) -> dict:
    return {
        "tag": "counting",
        "include": [{"class": shape, "count": n}],
        "exclude": [{"class": shape, "count": n + 1}],
        "prompt": f"{PREFIX}{COUNT_WORDS[n]} {PLURALS[shape]}",
    }


def colors(shape: str, color: str) -> dict:
    return {
        "tag": "colors",
        "include": [{"class": shape, "count": 1, "color": color}],
        "prompt": f"{PREFIX}{with_article(color)} {shape}",
    }


def position(shape_a: str, relation: str, shape_b: str) -> dict:
    """ "a photo of A <relation> B": include[0] is the reference B, include[1] is A with position [relation, 0]."""
    return {
        "tag": "position",
        "include": [{"class": shape_b, "count": 1}, {"class": shape_a, "count": 1, "position": [relation, 0]}],
        "prompt": f"{PREFIX}{with_article(shape_a)} {relation} {with_article(shape_b)}",
    }


def color_attr(shape_a: str, color_a: str, shape_b: str, color_b: str) -> dict:
    return {
        "tag": "color_attr",
        "include": [
            {"class": shape_a, "count": 1, "color": color_a},
            {"class": shape_b, "count": 1, "color": color_b},
        ],
        "prompt": f"{PREFIX}{with_article(color_a)} {shape_a} and {with_article(color_b)} {shape_b}",
    }


# ----------------------------------------------------------------------------------------------- enumeration
def _enumerate(tag: str) -> list[dict]:
    pairs = list(itertools.permutations(SHAPES, 2))
    if tag == "single_object":
        return [single_object(s) for s in SHAPES]
    if tag == "two_object":
        return [two_object(a, b) for a, b in pairs]
    if tag == "counting":
        return [counting(s, n) for s in SHAPES for n in sorted(COUNT_WORDS)]
    if tag == "colors":
        return [colors(s, c) for s in SHAPES for c in COLOR_NAMES]
    if tag == "position":
        return [position(a, r, b) for a, b in pairs for r in RELATIONS]
    if tag == "color_attr":
        return [color_attr(a, ca, b, cb) for a, b in pairs for ca, cb in itertools.permutations(COLOR_NAMES, 2)]
    raise ValueError(f"unknown tag {tag!r}; expected one of {TAGS}")


def _check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return TAGS
    if isinstance(tags, str):
        tags = (tags,)
    tags = tuple(tags)
    bad = [t for t in tags if t not in TAGS]
    if bad or not tags:
        raise ValueError(f"tags {list(tags)!r}: unknown or empty; expected a non-empty subset of {list(TAGS)}")
    return tags


def all_prompts(tags: Iterable[str] | str | None = None) -> list[dict]:
    """Every record of the closed grammar (240 in all), grouped by tag in `TAGS` order, deterministic."""
    return [r for t in _check_tags(tags) for r in _enumerate(t)]


def generate_prompts(n: int, *, seed: int = 0, tags: Iterable[str] | str | None = None) -> list[dict]:
    """`n` training records, balanced over `tags` (counts differ by at most one), seeded, shuffled.

    Within a tag each record of the grammar is equally likely (drawn with replacement), which equals GenEval's
    generator drawing each slot (shape, colour, count, relation) uniformly.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r}: expected a non-negative integer")
    tags = _check_tags(tags)
    rng = np.random.default_rng(seed)
    pools = {t: _enumerate(t) for t in tags}
    out: list[dict] = []
    for i, t in enumerate(tags):
        k = n // len(tags) + (1 if i < n % len(tags) else 0)
        idx = rng.integers(0, len(pools[t]), size=k)
        out.extend(copy.deepcopy(pools[t][j]) for j in idx)
    order = rng.permutation(len(out))
    return [out[j] for j in order]


def eval_prompts(
    per_tag: int = EVAL_PER_TAG, *, seed: int = EVAL_SEED, tags: Iterable[str] | str | None = None
) -> list[dict]:
    """The fixed GenEval-style evaluation set: `per_tag` records per tag, grouped by tag (GenEval's file order).

    Each tag's grammar is shuffled with `seed` and taken in order, cycling when `per_tag` exceeds the number of
    distinct prompts (single_object has 3, two_object 6, counting 9): repeats are then as even as possible. GenEval
    de-duplicates instead, which with a closed 3-shape vocabulary would leave 3 single-object prompts. [our reading]
    """
    if not isinstance(per_tag, (int, np.integer)) or per_tag < 1:
        raise ValueError(f"per_tag={per_tag!r}: expected a positive integer")
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for t in _check_tags(tags):
        pool = _enumerate(t)
        order = rng.permutation(len(pool))
        out.extend(copy.deepcopy(pool[order[i % len(pool)]]) for i in range(per_tag))
    return out


# ----------------------------------------------------------------------------------------------- parsing
def _fail(text: str, why: str) -> PromptFileError:
    return PromptFileError(f"prompt {text!r} is outside the shapes grammar ({why}); expected e.g. {_GRAMMAR_EXAMPLES}")


def _noun_phrase(words: Sequence[str], text: str) -> tuple[str | None, str]:
    """["a", "red", "square"] → ("red", "square"); ["a", "square"] → (None, "square")."""
    if len(words) not in (2, 3) or words[0] not in ("a", "an"):
        raise _fail(text, f"cannot read {' '.join(words)!r} as 'a [colour] shape'")
    color = words[1] if len(words) == 3 else None
    shape = words[-1]
    if shape not in SHAPES:
        raise _fail(text, f"unknown shape {shape!r}; shapes are {list(SHAPES)}")
    if color is not None and color not in COLOR_NAMES:
        raise _fail(text, f"unknown colour {color!r}; colours are {list(COLOR_NAMES)}")
    return color, shape


def parse_prompt(text: str) -> dict:
    """Inverse of the phrasing: prompt text → GenEval record (tag, include, optional exclude, prompt).

    Case, surrounding whitespace, repeated spaces and a trailing full stop are ignored; `prompt` in the result is the
    canonical phrasing. Text outside the grammar raises `PromptFileError` (a `ValueError`) naming the text.
    """
    if not isinstance(text, str):
        raise PromptFileError(f"prompt {text!r}: expected a string")
    norm = " ".join(text.strip().lower().rstrip(".").split())
    if not norm.startswith(PREFIX):
        raise _fail(text, f"must start with {PREFIX.strip()!r}")
    words = norm[len(PREFIX) :].split()
    if not words:
        raise _fail(text, "no object after 'a photo of'")

    if "and" in words:
        i = words.index("and")
        (ca, sa), (cb, sb) = _noun_phrase(words[:i], text), _noun_phrase(words[i + 1 :], text)
        if sa == sb:
            raise _fail(text, "the two objects must be different shapes")
        if ca is None and cb is None:
            return two_object(sa, sb)
        if ca is None or cb is None:
            raise _fail(text, "either both objects have a colour (color_attr) or neither (two_object)")
        if ca == cb:
            raise _fail(text, "color_attr prompts use two different colours")
        return color_attr(sa, ca, sb, cb)

    rest = " ".join(words)
    for rel in RELATIONS:
        key = f" {rel} "
        if key in f" {rest} ":
            left, _, right = f" {rest} ".partition(key)
            (ca, sa), (cb, sb) = _noun_phrase(left.split(), text), _noun_phrase(right.split(), text)
            if ca is not None or cb is not None:
                raise _fail(text, "position prompts name shapes without colours")
            if sa == sb:
                raise _fail(text, "the two objects must be different shapes")
            return position(sa, rel, sb)

    if words[0] not in ("a", "an"):  # counting: "<count word> <plural shape>"
        n = WORD_COUNTS.get(words[0])
        if n is None:
            raise _fail(text, f"expected an article or a count word {list(COUNT_WORDS.values())}, got {words[0]!r}")
        if len(words) != 2 or words[1] not in SINGULARS:
            raise _fail(text, f"expected '{words[0]} <plural shape>' with shapes {list(PLURALS.values())}")
        return counting(SINGULARS[words[1]], n)

    color, shape = _noun_phrase(words, text)
    return single_object(shape) if color is None else colors(shape, color)


# ----------------------------------------------------------------------------------------------- validation
def validate_record(record: object, *, shapes_only: bool = True) -> None:
    """Check a GenEval metadata record; raise `ValueError` saying what is wrong.

    GenEval schema: `tag` (one of the six), `include` (non-empty list of {class: str, count: int ≥ 1, color?: str,
    position?: [relation, index of an earlier entry]}), optional `exclude` (list of {class, count}), `prompt` (str).
    With `shapes_only` (default) classes and colours must also be in the shapes vocabulary (needed to render or
    verify); without it any strings pass, so real GenEval (COCO) metadata can be read.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in ("tag", "include", "prompt") if k not in record]
    if missing:
        raise ValueError(f"record lacks field(s) {missing}")
    extra = sorted(set(record) - {"tag", "include", "exclude", "prompt"})
    if extra:
        raise ValueError(f"record has unknown field(s) {extra}; GenEval fields are tag, include, exclude, prompt")
    if record["tag"] not in TAGS:
        raise ValueError(f"tag {record['tag']!r} is not one of {list(TAGS)}")
    if not isinstance(record["prompt"], str) or not record["prompt"].strip():
        raise ValueError("prompt must be a non-empty string")
    include = record["include"]
    if not isinstance(include, list) or not include:
        raise ValueError("include must be a non-empty list")
    for i, entry in enumerate(include):
        where = f"include[{i}]"
        _check_entry(entry, where, shapes_only)
        bad = sorted(set(entry) - {"class", "count", "color", "position"})
        if bad:
            raise ValueError(f"{where} has unknown key(s) {bad}")
        if "color" in entry:
            if not isinstance(entry["color"], str):
                raise ValueError(f"{where}.color must be a string")
            if shapes_only and entry["color"] not in COLOR_NAMES:
                raise ValueError(f"{where}.color {entry['color']!r} is not one of {list(COLOR_NAMES)}")
        if "position" in entry:
            pos = entry["position"]
            if not (isinstance(pos, (list, tuple)) and len(pos) == 2):
                raise ValueError(f"{where}.position must be [relation, index], got {pos!r}")
            rel, ref = pos
            if rel not in RELATIONS:
                raise ValueError(f"{where}.position relation {rel!r} is not one of {list(RELATIONS)}")
            if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < i:
                raise ValueError(f"{where}.position index {ref!r} must point at an earlier include entry (0..{i - 1})")
    exclude = record.get("exclude", [])
    if not isinstance(exclude, list):
        raise ValueError("exclude must be a list")
    for i, entry in enumerate(exclude):
        _check_entry(entry, f"exclude[{i}]", shapes_only)
        bad = sorted(set(entry) - {"class", "count"})
        if bad:
            raise ValueError(f"exclude[{i}] has unknown key(s) {bad}")


def _check_entry(entry: object, where: str, shapes_only: bool) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    if not isinstance(entry.get("class"), str):
        raise ValueError(f"{where}.class must be a string")
    if shapes_only and entry["class"] not in SHAPES:
        raise ValueError(f"{where}.class {entry['class']!r} is not one of {list(SHAPES)}")
    count = entry.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{where}.count must be an integer ≥ 1, got {count!r}")


def as_record(prompt_or_record: str | dict) -> dict:
    """A record from either a record (validated, returned as is) or prompt text (parsed)."""
    if isinstance(prompt_or_record, str):
        return parse_prompt(prompt_or_record)
    try:
        validate_record(prompt_or_record)
    except ValueError as e:
        raise PromptFileError(f"invalid shapes record {prompt_or_record!r}: {e}") from None
    return prompt_or_record
