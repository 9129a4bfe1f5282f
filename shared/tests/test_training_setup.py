"""Accelerator setup on CPU without a launcher, seeding, progress bar."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from shared.errors import ConfigError
from shared.training import progress, set_seed, setup_accelerator


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_setup_accelerator_cpu_and_seed(tmp_path):
    acc = setup_accelerator(gradient_accumulation_steps=2, seed=3, project_dir=tmp_path, cpu=True)
    assert acc.device.type == "cpu" and acc.num_processes == 1 and acc.is_main_process
    assert acc.gradient_accumulation_steps == 2 and acc.mixed_precision == "no"
    assert acc.project_dir == str(tmp_path)
    a = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_prepare_and_accumulate_train_a_step():
    acc = setup_accelerator(cpu=True, seed=0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    before = model.weight.detach().clone()
    with acc.accumulate(model):
        acc.backward(model(torch.ones(4, 2)).sum())
        opt.step()
        opt.zero_grad()
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"mixed_precision": "fp32"}, "mixed_precision = 'fp32'.*one of no, fp16, bf16, fp8"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps = 0"),
])
def test_bad_setup_values_fail_early(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        setup_accelerator(**kwargs)


def test_set_seed_device_specific(monkeypatch):
    import accelerate

    assert set_seed(5) == 5 and set_seed(5, device_specific=True) == 5  # one process: rank 0

    class Rank2:
        process_index = 2

    monkeypatch.setattr(accelerate, "PartialState", Rank2)
    assert set_seed(5, device_specific=True) == 7
    drawn = torch.rand(2)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(2))
    with pytest.raises(ConfigError, match="seed = -1"):
        set_seed(-1)


def test_progress_bar():
    bar = progress(range(5, 10), initial=5, desc="train", disable=True)
    assert list(bar) == [5, 6, 7, 8, 9] and bar.total == 10 and bar.disable
    with open(os.devnull, "w") as sink:
        bar = progress(range(5, 10), initial=5, file=sink)  # disable=None: shown on the main process
        assert not bar.disable and bar.n == 5
        assert list(bar) == [5, 6, 7, 8, 9] and bar.n == 10
        bar.close()
