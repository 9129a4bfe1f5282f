"""Atomic checkpoints, verification errors, RNG capture and bit-exact resume."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from shared.errors import CheckpointError
from shared.training import (
    EMA,
    FaultGuard,
    MetricsLogger,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    restore_rng_state,
    save_checkpoint,
)
from shared.training.checkpoint import MANIFEST


def _state():
    return {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)},
        "counters": {"epoch": 3, "name": "x", "lr": [1e-4, 2e-4]},
        "rng": capture_rng_state(),
    }


def test_save_layout_and_roundtrip(tmp_path):
    path = save_checkpoint(tmp_path, 7, _state())
    assert path.name == "checkpoint-00000007"
    assert sorted(p.name for p in path.iterdir()) == ["counters.pt", MANIFEST, "model.safetensors", "rng.pt"]
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["step"] == 7 and set(manifest["files"]) == {"counters.pt", "model.safetensors", "rng.pt"}
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert loaded["model"]["b"].dtype == torch.int64
    assert loaded["counters"] == {"epoch": 3, "name": "x", "lr": [1e-4, 2e-4]}
    assert not list(tmp_path.glob(".tmp-*"))


def test_tied_weights_and_keep_last(tmp_path):
    shared_w = torch.randn(3, 3)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"model": {"a": shared_w, "b": shared_w, "view": shared_w[0]}}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000003", "checkpoint-00000004"]
    loaded = load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(loaded["model"]["a"], shared_w) and torch.equal(loaded["model"]["view"], shared_w[0])
    save_checkpoint(tmp_path, 4, {"x": {"t": torch.zeros(1)}}, keep_last=None)  # same step: replaced
    assert set(load_checkpoint(tmp_path / "checkpoint-00000004")) == {"x", "step"}
    save_checkpoint(tmp_path, 2, {"x": {"t": torch.ones(1)}})  # resumed from an earlier step: later ones go
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000002"
    assert latest_checkpoint(tmp_path / "empty") is None


def test_crashed_save_leaves_no_checkpoint(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    save_checkpoint(tmp_path, 1, {"a": {"t": torch.zeros(2)}})
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"a": {"t": torch.zeros(2)}, "b": Boom()})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000001"]


def test_state_key_validation(tmp_path):
    with pytest.raises(ValueError, match="file-name-safe"):
        save_checkpoint(tmp_path, 1, {"a/b": 1})
    with pytest.raises(ValueError, match="differs"):
        save_checkpoint(tmp_path, 1, {"step": 2})


def _corrupt(kind, path):
    if kind == "truncated":
        f = path / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-10])
    elif kind == "flipped":
        f = path / "counters.pt"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif kind == "missing_entry":
        m = json.loads((path / MANIFEST).read_text())
        del m["files"]["rng.pt"]
        (path / MANIFEST).write_text(json.dumps(m))
    elif kind == "missing_file":
        (path / "rng.pt").unlink()
    elif kind == "no_manifest":
        (path / MANIFEST).unlink()
    elif kind == "garbage_manifest":
        (path / MANIFEST).write_text("{not json")
    elif kind == "garbage_file_rehashed":  # consistent manifest, undecodable content
        import hashlib

        f = path / "counters.pt"
        f.write_bytes(b"garbage" * 10)
        m = json.loads((path / MANIFEST).read_text())
        m["files"]["counters.pt"].update(bytes=70, sha256=hashlib.sha256(f.read_bytes()).hexdigest())
        (path / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("kind, pattern", [
    ("truncated", r"'model\.safetensors' has \d+ bytes.*truncated"),
    ("flipped", r"'counters\.pt' has sha256 .*corrupted"),
    ("missing_entry", r"'rng\.pt' has no entry in manifest\.json"),
    ("missing_file", r"'rng\.pt' listed in manifest\.json is missing"),
    ("no_manifest", r"has no manifest\.json"),
    ("garbage_manifest", r"manifest\.json is not valid JSON"),
    ("garbage_file_rehashed", r"'counters\.pt' cannot be loaded"),
])
def test_corrupt_checkpoint_names_path_and_problem(tmp_path, kind, pattern):
    save_checkpoint(tmp_path, 1, _state())
    path = save_checkpoint(tmp_path, 2, _state())
    _corrupt(kind, path)
    with pytest.raises(CheckpointError, match=pattern) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "Fix:" in msg and "checkpoint-00000001" in msg


def test_nonexistent_and_wrong_paths(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint .*nope: does not exist"):
        load_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path, 3, {"a": 1})
    with pytest.raises(CheckpointError, match=r"looks like a directory of checkpoints.*checkpoint-00000003"):
        load_checkpoint(tmp_path)
    f = tmp_path / "file.pt"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is not a checkpoint directory"):
        load_checkpoint(f)


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    from pathlib import Path

    path = save_checkpoint(tmp_path, 1, {"cfg": {"p": Path("/x")}})
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    assert load_checkpoint(path, weights_only=False)["cfg"]["p"] == Path("/x")


def test_rng_roundtrip_through_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(path)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


# --------------------------------------------------------------------------------------------------------------------
# bit-exact resume of a tiny seeded training loop


def _build(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    ema = EMA(model.parameters(), decay=0.9, update_every=2)
    guard = FaultGuard(max_consecutive=3)
    return model, opt, sched, ema, guard


def _train(parts, start, stop, run_dir, resume_step=None):
    model, opt, sched, ema, guard = parts
    logger = MetricsLogger(run_dir, resume_step=resume_step)
    losses = []
    for step in range(start + 1, stop + 1):
        x = torch.randn(8, 4)
        y = x.sum(1, keepdim=True) + 0.1 * torch.randn(8, 1) + random.random() * 1e-3 + np.random.rand() * 1e-3
        loss = nn.functional.mse_loss(model(x), y)
        guard.check_loss(loss)
        loss.backward()
        guard.step(opt, model.parameters(), max_grad_norm=1.0, scheduler=sched)
        ema.update()
        losses.append(loss.item())
        logger.log({"loss": loss, "lr": sched.get_last_lr()[0], **guard.metrics()}, step)
    logger.close()
    return losses


def _state_of(parts):
    model, opt, sched, ema, guard = parts
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "ema": ema.state_dict(), "faults": guard.state_dict(), "rng": capture_rng_state()}


def test_resume_is_bit_exact(tmp_path):
    random.seed(0), np.random.seed(0)
    full = _build(seed=0)
    full_losses = _train(full, 0, 10, tmp_path / "full")

    random.seed(0), np.random.seed(0)
    first = _build(seed=0)
    losses = _train(first, 0, 5, tmp_path / "resumed")
    save_checkpoint(tmp_path / "resumed" / "ckpt", 5, _state_of(first))
    _train(first, 5, 7, tmp_path / "resumed", resume_step=5)  # steps 6-7 run, then a "crash" before saving
    del first

    # fresh process state: different init seed, scrambled global RNGs, new objects
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    state = load_checkpoint(latest_checkpoint(tmp_path / "resumed" / "ckpt"))
    second = _build(seed=999)
    model, opt, sched, ema, guard = second
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    ema.load_state_dict(state["ema"])
    guard.load_state_dict(state["faults"])
    restore_rng_state(state["rng"])
    losses += _train(second, state["step"], 10, tmp_path / "resumed", resume_step=state["step"])

    assert losses == full_losses  # exact float equality
    for a, b in zip(full[0].parameters(), second[0].parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full[3].shadow, second[3].shadow, strict=True):
        assert torch.equal(a, b)
    assert full[1].state_dict()["state"][0]["exp_avg"].equal(second[1].state_dict()["state"][0]["exp_avg"])
    assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "full")
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == list(range(1, 11))
