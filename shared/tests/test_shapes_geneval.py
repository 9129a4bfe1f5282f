"""Shapes world: GenEval file formats (metadata, sample folders, results.jsonl, summary) and the example grid."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import PromptFileError
from shared.shapes import (
    TAGS,
    eval_prompts,
    evaluate_folder,
    read_metadata,
    read_samples,
    render,
    render_grid,
    summarize,
    write_metadata,
    write_samples,
)


def test_metadata_round_trip(tmp_path):
    recs = eval_prompts()
    path = write_metadata(tmp_path / "evaluation_metadata.jsonl", recs)
    lines = path.read_text().splitlines()
    assert len(lines) == 96 and json.loads(lines[0]) == recs[0]
    assert read_metadata(path) == recs


def test_read_metadata_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(PromptFileError, match="not found") as e:
        read_metadata(path)
    assert str(path) in str(e.value)


def test_read_metadata_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(PromptFileError, match="empty") as e:
        read_metadata(path)
    assert str(path) in str(e.value)


def test_read_metadata_malformed_line_names_file_and_line(tmp_path):
    recs = eval_prompts(per_tag=1)
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in recs]
    lines[2] = '{"tag": "counting", "include": [oops'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptFileError, match="not valid JSON") as e:
        read_metadata(path)
    assert f"{path}:3:" in str(e.value)
    lines[2] = json.dumps({"tag": "counting", "include": [{"class": "hexagon", "count": 2}], "prompt": "x"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptFileError, match="hexagon") as e:
        read_metadata(path)
    assert f"{path}:3:" in str(e.value)


def test_read_metadata_schema_only_reads_real_geneval_records(tmp_path):
    coco = {
        "tag": "position",
        "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a cat left of a dog",
    }
    path = write_metadata(tmp_path / "coco.jsonl", [coco], shapes_only=False)
    assert read_metadata(path, shapes_only=False) == [coco]
    with pytest.raises(PromptFileError, match=r"coco.jsonl:1:.*dog"):
        read_metadata(path)
    with pytest.raises(PromptFileError, match="record 0"):
        write_metadata(tmp_path / "x.jsonl", [coco])
    assert not (tmp_path / "x.jsonl").exists()


def test_samples_round_trip_and_evaluate_folder(tmp_path):
    recs = eval_prompts(per_tag=2)
    images = [[render(r, size=32, seed=10 * i + j) for j in range(2)] for i, r in enumerate(recs)]
    # one wrong image: the first sample of the colour prompt is blank
    colour = next(i for i, r in enumerate(recs) if r["tag"] == "colors")
    images[colour][0] = Image.new("RGB", (32, 32), "white")
    images[1][1] = torch.from_numpy(np.array(images[1][1])).permute(2, 0, 1).float() / 255  # tensors are accepted
    folder = write_samples(tmp_path / "out", recs, images)
    assert (folder / "00000" / "metadata.jsonl").is_file()
    assert (folder / "00000" / "samples" / "0001.png").is_file()
    assert Image.open(folder / "00000" / "grid.png").size[0] > 64
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}" for i in range(12)]

    back = list(read_samples(folder))
    assert [r for r, _ in back] == recs
    assert np.array_equal(np.asarray(back[3][1][1]), np.asarray(images[3][1]))

    summary = evaluate_folder(folder)
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    assert {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"} <= set(rows[0])
    assert json.loads(rows[0]["metadata"]) == recs[0]
    bad = [r for r in rows if not r["correct"]]
    assert len(bad) == 1 and bad[0]["filename"].endswith(f"{colour:05d}/samples/0000.png")
    assert bad[0]["reason"] == f"expected {recs[colour]['include'][0]['class']}>=1, found 0"
    assert summary["per_tag"]["colors"] == 0.75 and summary["total_images"] == 24
    assert summary["overall"] == pytest.approx((5 + 0.75) / 6)
    assert summary["correct_prompts"] == 1.0  # every prompt has a correct image
    other = evaluate_folder(folder, tmp_path / "r" / "res.jsonl")
    assert (tmp_path / "r" / "res.jsonl").is_file() and other["overall"] == summary["overall"]


def test_write_samples_without_grid_and_errors(tmp_path):
    recs = eval_prompts(per_tag=1)[:2]
    write_samples(tmp_path, recs, [[render(recs[0], seed=0)], [render(recs[1], seed=0)]], grid=False)
    assert not (tmp_path / "00000" / "grid.png").exists()
    with pytest.raises(ValueError):
        write_samples(tmp_path, recs, [[render(recs[0], seed=0)]])
    with pytest.raises(FileNotFoundError):
        list(read_samples(tmp_path / "missing"))
    (tmp_path / "00001" / "metadata.jsonl").write_text("")
    with pytest.raises(PromptFileError, match="00001"):
        list(read_samples(tmp_path))


def test_summarize_averages_tags_then_tags():
    rows = [
        {"tag": "counting", "prompt": "a", "correct": True},
        {"tag": "counting", "prompt": "a", "correct": False},
        {"tag": "counting", "prompt": "b", "correct": False},
        {"tag": "colors", "prompt": "c", "correct": True},
    ]
    s = summarize(rows)
    assert s["per_tag"] == {"counting": pytest.approx(1 / 3), "colors": 1.0}
    assert list(s["per_tag"]) == ["counting", "colors"]  # GenEval's tag order
    assert s["overall"] == pytest.approx((1 / 3 + 1) / 2)  # mean of tag means, not of images (0.5)
    assert s["correct_images"] == 0.5 and s["total_prompts"] == 3 and s["correct_prompts"] == pytest.approx(2 / 3)
    assert s["per_tag_counts"]["counting"] == [1, 3]
    with pytest.raises(ValueError):
        summarize([])


def test_render_grid(tmp_path):  # plain image_grid: test_imaging.py
    recs = eval_prompts(per_tag=2)
    fig = render_grid(recs, size=32, cols=2)
    assert fig.mode == "RGB" and fig.size[0] == 2 * 192 + 3 * 8  # 32 px upscaled 6× to ≈192, padding 8
    assert fig.size[1] > 6 * (192 + 3 * 10) + 7 * 8  # 6 rows, each with a 3-line caption band (prompt, tag, verdict)
    assert len(TAGS) * 2 == len(recs)
