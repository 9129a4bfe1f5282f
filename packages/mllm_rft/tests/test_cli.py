"""`mllm-rft` / `python -m mllm_rft`: help lists the config, bad input names the field, eval runs on a folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mllm_rft.cli import main


def test_help_lists_every_section_and_presets(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for field in ("objective.preset", "rollout.group_size", "rollout.dynamic_sampling", "reward.weights",
                  "train.epochs", "model.lora_rank", "model.freeze_vision", "eval.every", "run.dir"):
        assert field in out, field
    assert "shapes-count" in out


def test_print_config_of_each_preset(capsys):
    for preset, check in (("shapes-count", lambda c: c["model"]["path"] == "assets/shapes_vlm"),
                          ("qwen2vl-2b-clevr", lambda c: c["objective"]["beta"] == 0.04),
                          ("qwen25vl-7b-geo3k", lambda c: c["objective"]["dual_clip"] == 3.0)):
        paths = [] if preset == "shapes-count" else ["--set", "model.path=m", "--set", "data.path=d"]
        assert main(["train", "--preset", preset, *paths, "--print-config"]) == 0
        assert check(json.loads(capsys.readouterr().out)), preset


def test_bad_value_names_the_field(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--set", "rollout.temperature=0"])
    assert e.value.code == 2
    assert "rollout.temperature" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--preset", "qwen2vl-2b-clevr"])  # no data.path / model.path: named before loading
    err = capsys.readouterr().err
    assert "model.path" in err or "data.path" in err


def test_eval_on_a_model_folder(tiny_vlm_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(tiny_vlm_dir), "--n", "3", "--image-size", "32", "--max-new-tokens", "3",
                 "--tasks", "counting,attribute", "--out", str(out), "--examples", str(tmp_path / "ex")]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"counting/test", "counting/ood", "attribute/test", "attribute/ood"}
    assert (tmp_path / "ex_counting_test.png").is_file()
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_vlm_dir), "--tasks", "colours"])
    assert "--tasks" in capsys.readouterr().err


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "mllm_rft", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "mllm-rft" in r.stdout and "sft" in r.stdout
