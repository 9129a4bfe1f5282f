"""Faults: NaN rewards dropped, NaN loss / inf gradient steps skipped, too many in a row stop the run."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from shared.errors import TooManyFaultsError
from shared.training import FaultGuard, latest_checkpoint, load_checkpoint, sanitize_rewards, save_checkpoint


def test_sanitize_rewards():
    nan, inf = float("nan"), float("inf")
    out = sanitize_rewards(torch.tensor([1.0, nan, 2.0, -inf]))
    assert torch.equal(out.rewards, torch.tensor([1.0, 2.0]))
    assert out.keep.tolist() == [True, False, True, False] and out.n_dropped == 2
    clean, keep, n = sanitize_rewards([[1.0, 2.0], [3.0, nan], [5.0, 6.0]])  # per-component rewards
    assert keep.tolist() == [True, False, True] and n == 1 and clean.shape == (2, 2)
    assert sanitize_rewards(torch.tensor([1, 2])).n_dropped == 0  # integer rewards are always finite
    with pytest.raises(ValueError, match="batch dimension"):
        sanitize_rewards(torch.tensor(1.0))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt


def test_nan_reward_dropped_and_training_continues(caplog):
    model, opt = _setup()
    guard = FaultGuard(max_consecutive=2)
    taken = []
    for step in range(4):
        x = torch.randn(6, 3)
        rewards = x.sum(1)
        if step == 1:
            rewards[2] = float("nan")
        with caplog.at_level(logging.WARNING, logger="shared.training.faults"):
            kept = guard.check_rewards(rewards)
        loss = ((model(x[kept.keep]).squeeze(1) - kept.rewards) ** 2).mean()
        guard.check_loss(loss)
        loss.backward()
        taken.append(guard.step(opt, model.parameters()))
    assert taken == [True] * 4
    assert guard.dropped_samples == 1 and guard.skipped_steps == 0
    assert guard.metrics()["faults/dropped_samples"] == 1
    assert "dropped 1 of 6 samples" in caplog.text


def test_all_rewards_nan_is_a_faulty_step():
    guard = FaultGuard(max_consecutive=1)
    kept = guard.check_rewards(torch.full((4,), float("nan")))
    assert not kept.keep.any() and guard.skipped_steps == 1 and guard.consecutive == 1
    with pytest.raises(TooManyFaultsError, match="all 4 rewards non-finite"):
        guard.check_rewards(torch.full((4,), float("inf")))


def _run(inject, steps=5, max_consecutive=3):
    """Train a linear model; ``inject(step, loss, model)`` may corrupt the loss or gradients."""
    model, opt = _setup()
    guard = FaultGuard(max_consecutive=max_consecutive)
    history, taken = [], []
    for step in range(steps):
        x = torch.randn(6, 3)
        loss = ((model(x).squeeze(1) - x.sum(1)) ** 2).mean()
        loss = inject(step, loss, model, "loss")
        guard.check_loss(loss)
        loss.backward()
        inject(step, loss, model, "grad")
        before = [p.detach().clone() for p in model.parameters()]
        taken.append(guard.step(opt, model.named_parameters(), max_grad_norm=10.0))
        after = list(model.parameters())
        history.append(all(torch.equal(a, b) for a, b in zip(before, after, strict=True)))
        assert all(p.grad is None for p in model.parameters())  # grads cleared either way
    return guard, taken, history, model


def test_nan_loss_skips_exactly_that_step():
    def inject(step, loss, model, where):
        return loss * float("nan") if (where == "loss" and step == 2) else loss

    guard, taken, unchanged, _ = _run(inject)
    assert taken == [True, True, False, True, True]
    assert unchanged == [False, False, True, False, False]  # params frozen only on the faulty step
    assert guard.skipped_steps == 1 and guard.consecutive == 0
    assert "non-finite loss (nan)" in guard.recent[0]


def test_inf_gradient_skips_exactly_that_step():
    def inject(step, loss, model, where):
        if where == "grad" and step == 1:
            model.weight.grad[0, 1] = float("inf")
        return loss

    guard, taken, unchanged, _ = _run(inject)
    assert taken == [True, False, True, True, True] and unchanged == [False, True, False, False, False]
    assert guard.metrics()["faults/skipped_steps"] == 1
    assert guard.recent[0] == "non-finite gradient (inf) in weight"


def test_skipped_step_matches_a_run_without_that_batch():
    """A skipped step leaves no trace: the same as never having computed that batch (SGD has no state)."""

    def inject(step, loss, model, where):
        return loss + float("inf") if (where == "loss" and step == 1) else loss

    _, _, _, faulty = _run(inject, steps=3)
    torch.manual_seed(0)
    model, opt = _setup()
    for step in range(3):
        x = torch.randn(6, 3)
        loss = ((model(x).squeeze(1) - x.sum(1)) ** 2).mean()
        if step != 1:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
        opt.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(faulty.parameters(), model.parameters(), strict=True))


def test_consecutive_faults_stop_with_checkpoint(tmp_path):
    model, opt = _setup()
    ckpt_dir = tmp_path / "ckpt"
    step_box = {"step": 0}
    guard = FaultGuard(max_consecutive=2, on_abort=lambda: save_checkpoint(
        ckpt_dir, step_box["step"], {"model": model.state_dict(), "faults": guard.state_dict()}))
    good = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TooManyFaultsError) as e:
        for step in range(1, 10):
            step_box["step"] = step
            loss = model(torch.randn(2, 3)).mean() * float("nan")
            guard.check_loss(loss)
            loss.backward()
            guard.step(opt, model.parameters())
    msg = str(e.value)
    assert step_box["step"] == 3  # the third fault in a row exceeds max_consecutive=2
    assert "3 faulty steps in a row (max_consecutive=2)" in msg and "non-finite loss" in msg
    assert "lower learning rate" in msg and "reward function" in msg and "checkpoint was written" in msg
    state = load_checkpoint(latest_checkpoint(ckpt_dir))
    assert state["step"] == 3 and state["faults"]["skipped_steps"] == 3
    assert all(torch.equal(state["model"][k], v) for k, v in zip(["weight", "bias"], good, strict=True))


def test_abort_callback_failure_is_reported():
    def broken():
        raise OSError("disk full")

    guard = FaultGuard(max_consecutive=0, on_abort=broken)
    with pytest.raises(TooManyFaultsError, match="on_abort callback failed too: OSError: disk full"):
        guard.check_rewards([float("nan")])


def test_clip_grad_norm_callable_and_metrics():
    model, opt = _setup()
    seen = []

    def clip(params, max_norm):
        seen.append(max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    guard = FaultGuard()
    model(torch.randn(4, 3)).sum().backward()
    assert guard.step(opt, model.parameters(), max_grad_norm=0.5, clip_grad_norm=clip)
    assert seen == [0.5] and math.isfinite(guard.metrics()["grad_norm"])


def test_scheduler_only_steps_on_good_steps():
    model, opt = _setup()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    guard = FaultGuard()
    for bad in (False, True, False):
        loss = model(torch.randn(2, 3)).sum() * (float("nan") if bad else 1.0)
        guard.check_loss(loss)
        loss.backward()
        guard.step(opt, model.parameters(), scheduler=sched)
    assert sched.last_epoch == 2 and opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_grad_scaler_sees_overflow_and_lowers_scale():
    model, base = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    class ScaledOptimizer:  # what accelerate's AcceleratedOptimizer does with fp16
        def __init__(self):
            self.scaler = scaler

        def step(self):
            scaler.step(base)
            scaler.update()

        def zero_grad(self, set_to_none=True):
            base.zero_grad(set_to_none=set_to_none)

    opt = ScaledOptimizer()
    guard = FaultGuard()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(model(torch.randn(2, 3)).sum()).backward()
    model.bias.grad.fill_(float("inf"))
    assert guard.step(opt, model.parameters()) is False
    assert scaler.get_scale() == 512.0 and guard.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_state_dict_roundtrip():
    guard = FaultGuard()
    guard.check_rewards([1.0, float("nan")])
    other = FaultGuard()
    other.load_state_dict(guard.state_dict())
    assert other.metrics() == guard.metrics()
    with pytest.raises(ValueError, match="max_consecutive"):
        FaultGuard(max_consecutive=-1)
