"""MetricsLogger: JSONL lines, resume truncation, optional TensorBoard / W&B."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from shared.training import MetricsLogger, read_metrics


def test_jsonl_lines_and_conversion(tmp_path):
    with MetricsLogger(tmp_path / "run") as logger:
        rec = logger.log({"loss": torch.tensor(0.5), "n": np.int64(3), "frac": np.float32(0.25),
                          "hist": torch.tensor([1.0, 2.0]), "ok": True, "tag": "a", "bad": float("nan")}, step=1)
        logger.log({"loss": 0.25}, step=2)
    assert rec == {"step": 1, "loss": 0.5, "n": 3, "frac": 0.25, "hist": [1.0, 2.0], "ok": True, "tag": "a",
                   "bad": rec["bad"]}
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1]) == {"step": 2, "loss": 0.25}
    got = read_metrics(tmp_path / "run")
    assert got[0]["loss"] == 0.5 and math.isnan(got[0]["bad"]) and got[1]["step"] == 2
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[1] == {"step": 2, "loss": 0.25}


def test_log_argument_errors(tmp_path):
    logger = MetricsLogger(tmp_path)
    with pytest.raises(ValueError, match="must not contain 'step'"):
        logger.log({"step": 1}, step=1)
    with pytest.raises(TypeError, match="not a number"):
        logger.log({"x": object()}, step=1)
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log({"x": 1}, step=1)


def test_resume_truncates_later_steps_and_partial_line(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        for s in range(1, 8):
            logger.log({"v": s}, step=s)
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 8, "v"')  # crash mid-write
    with MetricsLogger(tmp_path, resume_step=5) as logger:
        for s in range(6, 9):
            logger.log({"v": s * 10}, step=s)
    got = read_metrics(tmp_path)
    assert [r["step"] for r in got] == list(range(1, 9))
    assert [r["v"] for r in got] == [1, 2, 3, 4, 5, 60, 70, 80]
    with MetricsLogger(tmp_path) as logger:  # no resume_step: a new run replaces the file
        logger.log({"v": 0}, step=1)
    assert read_metrics(tmp_path) == [{"step": 1, "v": 0}]


def test_malformed_middle_line_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not valid JSON"):
        read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "missing")


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "rank1", enabled=False, tensorboard=True, wandb=True)
    assert logger.log({"x": 1}, step=1) == {"step": 1, "x": 1}
    logger.close()
    assert not (tmp_path / "rank1").exists()


def test_optional_backends_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"shared\[tensorboard\]"):
        MetricsLogger(tmp_path, tensorboard=True)
    with pytest.raises(ImportError, match=r"shared\[wandb\]"):
        MetricsLogger(tmp_path, wandb=True)


def test_tensorboard_and_wandb_receive_scalars_offline(tmp_path, monkeypatch):
    calls: dict[str, list] = {"tb": [], "init": [], "log": [], "finish": []}

    class Writer:
        def __init__(self, log_dir, purge_step):
            calls["tb"].append(("init", log_dir, purge_step))

        def add_scalar(self, k, v, step):
            calls["tb"].append((k, v, step))

        def close(self):
            calls["tb"].append("close")

    class Run:
        def log(self, data, step):
            calls["log"].append((data, step))

        def finish(self):
            calls["finish"].append(True)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(
        init=lambda **kw: calls["init"].append(kw) or Run()))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with MetricsLogger(tmp_path, resume_step=None, tensorboard=True, wandb=True, wandb_project="p",
                       config={"lr": 1e-4}) as logger:
        logger.log({"loss": 0.5, "tag": "x"}, step=3)
    assert calls["tb"] == [("init", str(tmp_path / "tensorboard"), None), ("loss", 0.5, 3), "close"]
    assert calls["init"][0]["mode"] == "offline" and calls["init"][0]["project"] == "p"
    assert calls["init"][0]["config"] == {"lr": 1e-4}
    assert calls["log"] == [({"loss": 0.5, "tag": "x"}, 3)] and calls["finish"] == [True]
    monkeypatch.setenv("WANDB_MODE", "online")
    MetricsLogger(tmp_path, resume_step=3, wandb=True).close()
    assert calls["init"][1]["mode"] == "online" and calls["init"][1]["resume"] == "allow"
