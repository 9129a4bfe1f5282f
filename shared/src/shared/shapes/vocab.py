"""The closed vocabulary of the shapes world (shared_core.md §11).

A few shapes × a few saturated colours on a white background, GenEval's six tags, counts 2–4 and its four relations.
Everything else in `shared.shapes` (prompts, renderer, verifier) reads its words and colours from here.

Colours are chosen to be far apart both in RGB and in "ink" space (255 − rgb), which is what the verifier unmixes
against the white background (see `detect.py`). [our reading]
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles"}
SINGULARS: dict[str, str] = {v: k for k, v in PLURALS.items()}

# name -> RGB (uint8). Saturated, pairwise distinct; the verifier's palette.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "orange": (250, 135, 0),
    "yellow": (235, 215, 0),
    "green": (20, 160, 40),
    "blue": (25, 60, 230),
    "purple": (140, 30, 190),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

# GenEval counting prompts use 2–4 objects (`prompts/create_prompts.py`, max_count=4).
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
WORD_COUNTS: dict[str, int] = {v: k for k, v in COUNT_WORDS.items()}
MIN_COUNT, MAX_COUNT = 2, 4

# Relation of the described object A to the reference object B ("A left of B"); image y grows downwards.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def with_article(word: str) -> str:
    """GenEval's article rule: "an" before a vowel, else "a" ("an orange circle", "a square")."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def plural(shape: str) -> str:
    """Plural of a shape name ("circle" → "circles")."""
    return PLURALS[shape]
