"""`chunk-grpo l1rel` on a tiny pipeline saved to disk: PNG + JSON with the curve and the three chunkings."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from chunk_grpo.chunking import adaptive
from chunk_grpo.cli import main


def test_l1rel_cli_writes_the_plot_and_the_curve(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "plots" / "l1rel.png"
    assert main(["l1rel", "--model", str(tiny_model_dir), "--out", str(out), "--prompts", "3", "--num-steps", "6",
                 "--sizes", "1,2,3", "--size", "4", "--max-chunk", "2", "--guidance", "1"]) == 0
    assert Image.open(out).size[0] > 100
    data = json.loads(out.with_suffix(".json").read_text())
    assert (data["num_steps"], data["trained_steps"], data["num_prompts"]) == (6, 6, 3)
    assert len(data["mean"]) == len(data["std"]) == 6 and len(data["per_prompt"]) == 3 and len(data["sigmas"]) == 7
    assert data["sigmas"][0] == 1.0 and all(v > 0 for v in data["mean"])
    assert data["chunks"]["fixed"] == [1, 2, 3] and data["chunks"]["uniform"] == [4, 2]
    assert data["chunks"]["adaptive"] == adaptive(data["mean"], max_chunk=2)
    assert "adaptive" in capsys.readouterr().out


def test_l1rel_cli_drop_last_and_bad_sizes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "l1rel.png"
    common = ["l1rel", "--model", str(tiny_model_dir), "--out", str(out), "--prompts", "2", "--num-steps", "6"]
    assert main(common + ["--drop-last", "--sizes", "2,3", "--max-order", "0", "--seed", "3"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["trained_steps"] == 5 and data["chunks"]["fixed"] == [2, 3] and data["chunks"]["uniform"] == [4, 1]
    assert data["chunks"]["adaptive"] == [3, 2]  # max_order 0: bisection, 5 → 3 + 2
    with pytest.raises(SystemExit) as exit_:
        main(common + ["--sizes", "2,2"])  # 4 ≠ 6 trained transitions
    assert exit_.value.code == 2 and "sum to 4" in capsys.readouterr().err
