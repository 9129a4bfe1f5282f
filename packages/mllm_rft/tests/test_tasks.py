"""Tests of `mllm_rft.tasks`: answers vs the pixel detector, split hold-outs, determinism, scoring, loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mllm_rft.rewards import box_iou
from mllm_rft.tasks import (
    COUNTS,
    HELD_OUT_PAIRS,
    SPLITS,
    Sample,
    available_tasks,
    load_jsonl,
    load_parquet,
    make_split,
    verify,
)
from shared.errors import ConfigError, PromptFileError
from shared.shapes import COLOR_NAMES, SHAPES, detect_objects, relations

N = 24


def _found(sample: Sample, shape: str | None = None, color: str | None = None):
    return [
        o
        for o in detect_objects(sample.image)
        if (shape is None or o.shape == shape) and (color is None or o.color == color)
    ]


@pytest.mark.parametrize("task", ["counting", "counting_shape", "counting_colour"])
@pytest.mark.parametrize("split", SPLITS)
def test_counting_answer_equals_detected_count(split, task):
    for s in make_split(task, split, N, seed=1):
        n = int(s.answer)
        assert n == len(_found(s, s.meta["shape"], s.meta["color"]))
        assert n in COUNTS
        assert s.target == s.answer and s.reward == "count"


@pytest.mark.parametrize("split", SPLITS)
def test_attribute_answer_matches_detected_object(split):
    for s in make_split("attribute", split, N, seed=2):
        if s.meta["asked"] == "color":
            shape = s.question.removeprefix("What colour is the ").removesuffix("?")
            (obj,) = _found(s, shape=shape)
            assert s.answer == obj.color
        else:
            color = s.question.removeprefix("What shape is the ").removesuffix(" object?")
            (obj,) = _found(s, color=color)
            assert s.answer == obj.shape
        assert s.answer in COLOR_NAMES + SHAPES and s.reward == "label"


@pytest.mark.parametrize("split", SPLITS)
def test_spatial_answer_agrees_with_detected_relation(split):
    seen_answers = set()
    for s in make_split("spatial", split, 40, seed=3):
        (a,) = _found(s, *s.meta["a"])
        (b,) = _found(s, *s.meta["b"])
        rels = relations(a.centroid, a.dims, b.centroid, b.dims)  # GenEval's rule, threshold 0.1, from pixels
        rel = s.meta["relation"]
        if s.meta["kind"] == "yes_no":
            assert s.answer == ("yes" if rel in rels else "no")
        else:
            assert rel in rels and s.answer == rel.removesuffix(" of")
        seen_answers.add(s.answer)
    assert {"yes", "no"} <= seen_answers and len(seen_answers) >= 4


@pytest.mark.parametrize("split", SPLITS)
def test_grounding_box_matches_detected_box(split):
    for s in make_split("grounding", split, N, seed=4):
        shape, color = s.meta["query"]
        (obj,) = _found(s, shape, color)
        x0, y0, x1, y1 = s.target
        cx, cy = obj.centroid
        assert x0 <= cx < x1 and y0 <= cy < y1
        assert box_iou(s.target, obj.bbox) > 0.8
        assert s.reward == "iou" and s.image.size == (64, 64)


def _pairs_drawn(samples):
    return {(o["class"], o["color"]) for s in samples for o in s.meta["objects"]}


@pytest.mark.parametrize("task", ["counting", "counting_colour", "attribute", "spatial", "grounding"])
def test_held_out_pairs_only_in_ood(task):
    for split in ("train", "test"):
        assert not _pairs_drawn(make_split(task, split, 60, seed=5)) & HELD_OUT_PAIRS
    ood = make_split(task, "ood", 30, seed=5)
    for s in ood:
        if task.startswith("counting"):  # every counted object has a held-out pair, every other object a seen one
            for o in s.meta["objects"]:
                counted = o["class"] == s.meta["shape"] and s.meta["color"] in (None, o["color"])
                assert ((o["class"], o["color"]) in HELD_OUT_PAIRS) == counted
            continue
        query = s.meta["a"] if task == "spatial" else s.meta["query"]
        assert tuple(query) in HELD_OUT_PAIRS
    # every colour and every shape is still seen in training
    train = _pairs_drawn(make_split(task, "train", 200, seed=6))
    assert {c for _, c in train} == set(COLOR_NAMES) and {s for s, _ in train} == set(SHAPES)


def test_counting_uses_the_same_counts_in_every_split():
    for split in SPLITS:
        assert {int(s.answer) for s in make_split("counting", split, 80, seed=7)} == set(COUNTS)


def test_counting_variants_name_the_colour_always_or_never():
    shape_only = make_split("counting_shape", "train", 60, seed=3)
    colour = make_split("counting_colour", "train", 60, seed=3)
    assert all(s.meta["color"] is None and s.task == "counting_shape" for s in shape_only)
    assert all(s.meta["color"] is not None and s.meta["color"] in s.question for s in colour)
    # colour questions have distractors of the asked shape in another colour, which only the colour tells apart
    assert any(o["class"] == s.meta["shape"] and o["color"] != s.meta["color"]
               for s in colour for o in s.meta["objects"])
    mixed = make_split("counting", "train", 60, seed=3)
    assert 10 < sum(s.meta["color"] is not None for s in mixed) < 50


def test_adding_tasks_keeps_the_streams_of_the_others():
    """Each task's seeds use a fixed stream number: these samples were drawn before the counting variants existed."""
    grounding = [[20, 3, 41, 24], [9, 29, 25, 45], [28, 35, 44, 51]]
    assert [s.target for s in make_split("grounding", "train", 3, seed=0)] == grounding
    spatial = ["yes", "right", "yes", "no", "left", "above"]
    assert [s.answer for s in make_split("spatial", "test", 6, seed=0)] == spatial
    counting = make_split("counting", "test", 4, seed=0)
    assert [s.answer for s in counting] == ["3", "1", "3", "1"]
    assert [s.question.split()[2:4] for s in counting] == [["green", "triangles"], ["blue", "circles"],
                                                           ["orange", "triangles"], ["green", "triangles"]]


@pytest.mark.parametrize("task", ["counting", "grounding"])
def test_deterministic_and_train_test_streams_differ(task):
    a, b = make_split(task, "train", 8, seed=11), make_split(task, "train", 8, seed=11)
    assert [s.question for s in a] == [s.question for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    assert [s.meta["objects"] for s in make_split(task, "train", 3, seed=11)] == [s.meta["objects"] for s in a[:3]]
    test = make_split(task, "test", 8, seed=11)
    assert [s.meta["objects"] for s in a] != [s.meta["objects"] for s in test]
    assert [s.meta["objects"] for s in a] != [s.meta["objects"] for s in make_split(task, "train", 8, seed=12)]


def test_max_distractors_and_image_size_change_scenes():
    plain = make_split("counting", "train", 30, seed=8, max_distractors=0)
    busy = make_split("counting", "train", 30, seed=8, max_distractors=2)
    assert all(len(s.meta["objects"]) == int(s.answer) for s in plain)
    assert any(len(s.meta["objects"]) > int(s.answer) for s in busy)
    small = make_split("grounding", "train", 2, seed=8, image_size=48)
    assert small[0].image.size == (48, 48) and max(small[0].target) <= 48


@pytest.mark.parametrize("task", ["counting", "attribute", "spatial", "grounding"])
def test_verify_true_and_wrong_answers(task):
    wrong = {"counting": "7", "attribute": "black", "spatial": "maybe", "grounding": "[0, 0, 1, 1]"}
    for s in make_split(task, "test", 6, seed=9):
        assert verify(s, f"<think>look</think><answer>{s.answer}</answer>") == 1.0
        assert verify(s, f"<answer>{wrong[task]}</answer>") == 0.0
        assert verify(s, s.answer) == 0.0  # no answer block: the rewards' rule


def test_make_split_rejects_bad_arguments():
    assert available_tasks() == ["attribute", "counting", "counting_colour", "counting_shape", "grounding", "spatial"]
    with pytest.raises(ConfigError, match="task='colour'"):
        make_split("colour", "train", 1, seed=0)
    with pytest.raises(ConfigError, match="split='val'"):
        make_split("counting", "val", 1, seed=0)
    with pytest.raises(ConfigError, match="n=-1"):
        make_split("counting", "train", -1, seed=0)


# ----------------------------------------------------------------------------------------------------------- loaders
def _write_pngs(tmp_path):
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (5, 5), (0, 0, 255)).save(tmp_path / "b.png")


def test_jsonl_round_trip_counting_and_grounding(tmp_path):
    _write_pngs(tmp_path)
    rows = [
        {"image": "a.png", "problem": "How many red things?", "solution": "<answer>1</answer>"},
        {"image": "b.png", "problem": "How many blue things?", "solution": "<answer> 2 </answer>"},
    ]
    path = tmp_path / "clevr.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    samples = load_jsonl(path, image_root=tmp_path, answer_key="solution", reward="count", task="clevr")
    assert [s.answer for s in samples] == ["1", "2"]
    assert samples[0].image.size == (8, 6) and samples[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert samples[1].question == "How many blue things?" and samples[1].task == "clevr"
    assert verify(samples[1], "<answer>2</answer>") == 1.0 and verify(samples[1], "<answer>1</answer>") == 0.0

    boxes = tmp_path / "rec.jsonl"
    boxes.write_text(json.dumps({"image": ["a.png", "b.png"], "problem": "box?", "answer": [1, 1, 4, 4]}) + "\n")
    (rec,) = load_jsonl(boxes, image_root=tmp_path, reward="iou")
    assert rec.target == [1.0, 1.0, 4.0, 4.0] and rec.meta["n_images"] == 2
    assert verify(rec, "<answer>[1, 1, 4, 4]</answer>") == 1.0


def test_jsonl_missing_column_named_before_images_are_read(tmp_path):
    path = tmp_path / "geo.jsonl"
    path.write_text(json.dumps({"images": ["missing.png"], "problem": "x?", "answer": "3"}) + "\n")
    with pytest.raises(PromptFileError, match=r"missing column 'image'.*columns present: \['images', 'problem'"):
        load_jsonl(path, image_root=tmp_path)
    with pytest.raises(PromptFileError, match="missing.png"):  # right key: now the image itself is looked for
        load_jsonl(path, image_root=tmp_path, image_key="images")


def test_bad_gold_raises_naming_the_row(tmp_path):
    _write_pngs(tmp_path)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"image": "a.png", "problem": "q", "answer": "many"}) + "\n")
    with pytest.raises(PromptFileError, match="row 0.*'many'"):
        load_jsonl(path, image_root=tmp_path, reward="count")


def test_parquet_round_trip_and_missing_column(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    _write_pngs(tmp_path)
    png = (tmp_path / "b.png").read_bytes()
    df = pd.DataFrame(
        {"images": [[{"bytes": png, "path": None}]], "problem": ["What is x?"], "answer": ["12"]}
    )
    path = tmp_path / "geo.parquet"
    df.to_parquet(path)
    (s,) = load_parquet(path, image_key="images", reward="numeric")
    assert s.image.size == (5, 5) and s.answer == "12"
    assert verify(s, "<answer>12.0</answer>") == 1.0
    with pytest.raises(PromptFileError, match=r"missing column 'question'.*'images', 'problem', 'answer'"):
        load_parquet(path, question_key="question", image_key="images")
