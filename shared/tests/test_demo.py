"""The shapes-base demo: sampling, GenEval layout, scoring, report; and the committed base itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.demo import evaluate_base, main, resolve_model
from shared.tiny import TinySD3Config, tiny_sd3_pipeline

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "assets" / "shapes_base"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    tiny_sd3_pipeline(TinySD3Config(vae_channels=None, with_t5=False, patch_size=4)).save_pretrained(path)
    return path


def test_evaluate_writes_geneval_layout_and_summary(tiny_base, tmp_path):
    out = tmp_path / "eval"
    summary = evaluate_base(tiny_base, per_tag=1, images_per_prompt=2, num_steps=2, out_dir=out, progress=False)
    assert set(summary["per_tag"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert 0.0 <= summary["overall"] <= 1.0
    assert (out / "00000" / "metadata.jsonl").is_file() and (out / "00000" / "samples" / "0001.png").is_file()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all({"correct", "reason"} <= set(r) for r in rows)
    assert (out / "overview.png").is_file()


def test_cli_report(tiny_base, tmp_path, capsys):
    main(["--model", str(tiny_base), "--out", str(tmp_path / "e"), "--per-tag", "1", "--images-per-prompt", "1",
          "--steps", "2", "--report", str(tmp_path / "docs" / "base")])
    assert "overall" in capsys.readouterr().out
    for ext in (".md", ".json", ".png"):
        assert (tmp_path / "docs" / ("base" + ext)).is_file()


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="local model folder.*train_shapes_base"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train_shapes_masked_base"):
        resolve_model(tmp_path / "nope", rebuild="tools/train_shapes_masked_base.py")


def test_committed_base_is_small_and_loads():
    from shared.rollout.loading import load_pipeline

    files = [f for f in BASE.rglob("*") if f.is_file()]
    assert files, "assets/shapes_base is missing; rebuild it with tools/train_shapes_base.py"
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    assert all(f.suffix != ".bin" for f in files)  # safetensors only
    pipe = load_pipeline(BASE)
    assert pipe.vae is None and pipe.transformer.config.in_channels == 3
