"""Shapes world: vocabulary, GenEval records, generator, fixed eval set, parser."""

import json
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from shared.errors import PromptFileError
from shared.shapes import (
    COLORS,
    TAGS,
    all_prompts,
    eval_prompts,
    generate_prompts,
    parse_prompt,
    validate_record,
)
from shared.shapes.vocab import COUNT_WORDS, RELATIONS, SHAPES


def test_vocabulary_is_small_and_colours_are_far_apart():
    assert SHAPES == ("circle", "square", "triangle")
    assert 2 <= len(COLORS) <= 6
    assert set(COUNT_WORDS) == {2, 3, 4}
    assert RELATIONS == ("left of", "right of", "above", "below")
    assert TAGS == ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    for (a, ca), (b, cb) in combinations(COLORS.items(), 2):
        assert np.linalg.norm(np.subtract(ca, cb)) > 80, (a, b)
    for name, c in COLORS.items():  # far from the white background
        assert np.linalg.norm(np.subtract(c, 255)) > 200, name


def test_geneval_phrasing_and_schema():
    by_prompt = {r["prompt"]: r for r in all_prompts()}
    assert by_prompt["a photo of a circle"] == {
        "tag": "single_object",
        "include": [{"class": "circle", "count": 1}],
        "prompt": "a photo of a circle",
    }
    assert by_prompt["a photo of three squares"] == {
        "tag": "counting",
        "include": [{"class": "square", "count": 3}],
        "exclude": [{"class": "square", "count": 4}],
        "prompt": "a photo of three squares",
    }
    assert by_prompt["a photo of a red square"]["include"] == [{"class": "square", "count": 1, "color": "red"}]
    assert by_prompt["a photo of an orange circle"]["tag"] == "colors"  # GenEval's a/an rule
    assert by_prompt["a photo of a red square and a blue circle"] == {
        "tag": "color_attr",
        "include": [
            {"class": "square", "count": 1, "color": "red"},
            {"class": "circle", "count": 1, "color": "blue"},
        ],
        "prompt": "a photo of a red square and a blue circle",
    }
    # GenEval: include[0] is the reference object, include[1] carries position [relation, 0]
    assert by_prompt["a photo of a circle left of a square"]["include"] == [
        {"class": "square", "count": 1},
        {"class": "circle", "count": 1, "position": ["left of", 0]},
    ]
    assert by_prompt["a photo of a square and a circle"]["tag"] == "two_object"
    for r in all_prompts():
        validate_record(r)
        assert json.loads(json.dumps(r)) == r  # JSON round trip unchanged (position is a list)


def test_all_prompts_enumerates_the_grammar():
    recs = all_prompts()
    counts = Counter(r["tag"] for r in recs)
    assert counts == {
        "single_object": 3,
        "two_object": 6,
        "counting": 9,
        "colors": 18,
        "position": 24,
        "color_attr": 180,
    }
    assert len({r["prompt"] for r in recs}) == len(recs) == 240
    assert [r["tag"] for r in all_prompts("counting")] == ["counting"] * 9


def test_parse_prompt_round_trips_every_prompt():
    for r in all_prompts() + generate_prompts(300, seed=5):
        assert parse_prompt(r["prompt"]) == r


def test_parse_prompt_normalises_case_space_and_full_stop():
    assert parse_prompt("  A Photo of  THREE circles. ") == parse_prompt("a photo of three circles")
    assert parse_prompt("a photo of a orange square")["prompt"] == "a photo of an orange square"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a picture of a circle",
        "a photo of a hexagon",
        "a photo of a pink circle",
        "a photo of five circles",
        "a photo of three circle",
        "a photo of a circle and a circle",
        "a photo of a red circle and a square",
        "a photo of a red circle and a red square",
        "a photo of a red circle left of a square",
        "a photo of a circle left of a circle",
        "a photo of a circle near a square",
        "a photo of",
    ],
)
def test_parse_prompt_rejects_text_outside_the_grammar(text):
    with pytest.raises(PromptFileError, match="outside the shapes grammar") as e:
        parse_prompt(text)
    assert repr(text) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_generate_prompts_balanced_seeded_and_filtered():
    recs = generate_prompts(100, seed=3)
    counts = Counter(r["tag"] for r in recs)
    assert set(counts) == set(TAGS) and max(counts.values()) - min(counts.values()) <= 1
    assert recs == generate_prompts(100, seed=3)
    assert recs != generate_prompts(100, seed=4)
    assert [r["tag"] for r in recs[:12]] != sorted(r["tag"] for r in recs[:12])  # shuffled across tags
    only = generate_prompts(10, seed=0, tags=["counting", "position"])
    assert Counter(r["tag"] for r in only) == {"counting": 5, "position": 5}
    assert generate_prompts(0) == []
    with pytest.raises(ValueError, match="tags"):
        generate_prompts(4, tags=["nope"])
    with pytest.raises(ValueError, match="non-negative"):
        generate_prompts(-1)
    recs[0]["include"].append("mutated")  # records are independent copies
    assert all("mutated" not in r["include"] for r in generate_prompts(100, seed=3)[1:])


def test_eval_prompts_fixed_balanced_and_grouped():
    ev = eval_prompts()
    assert len(ev) == 96 and ev == eval_prompts()
    assert [r["tag"] for r in ev] == [t for t in TAGS for _ in range(16)]
    single = Counter(r["prompt"] for r in ev if r["tag"] == "single_object")
    assert sorted(single.values()) == [5, 5, 6]  # 3 distinct prompts cycled evenly
    assert len({r["prompt"] for r in ev if r["tag"] == "color_attr"}) == 16  # no repeats when the grammar is large
    assert eval_prompts(per_tag=2, seed=1) != eval_prompts(per_tag=2, seed=2)
    with pytest.raises(ValueError):
        eval_prompts(per_tag=0)


@pytest.mark.parametrize(
    "record, match",
    [
        ({"tag": "colors", "include": [{"class": "square", "count": 1}]}, "lacks"),
        ({"tag": "bogus", "include": [{"class": "square", "count": 1}], "prompt": "x"}, "tag"),
        ({"tag": "colors", "include": [], "prompt": "x"}, "non-empty"),
        ({"tag": "colors", "include": [{"class": "dog", "count": 1}], "prompt": "x"}, "class"),
        ({"tag": "colors", "include": [{"class": "square", "count": 0}], "prompt": "x"}, "count"),
        ({"tag": "colors", "include": [{"class": "square", "count": 1, "color": "pink"}], "prompt": "x"}, "color"),
        (
            {"tag": "position", "include": [{"class": "square", "count": 1, "position": ["near", 0]}], "prompt": "x"},
            "relation",
        ),
        (
            {"tag": "position", "include": [{"class": "square", "count": 1, "position": ["above", 0]}], "prompt": "x"},
            "earlier",
        ),
        ({"tag": "counting", "include": [{"class": "square", "count": 2}], "exclude": {}, "prompt": "x"}, "exclude"),
        ({"tag": "counting", "include": [{"class": "square", "count": 2}], "prompt": "x", "extra": 1}, "unknown field"),
    ],
)
def test_validate_record_names_the_problem(record, match):
    with pytest.raises(ValueError, match=match):
        validate_record(record)


def test_validate_record_schema_only_accepts_coco_words():
    coco = {
        "tag": "colors",
        "include": [{"class": "dog", "count": 1, "color": "pink"}],
        "prompt": "a photo of a pink dog",
    }
    validate_record(coco, shapes_only=False)
    with pytest.raises(ValueError):
        validate_record(coco)
