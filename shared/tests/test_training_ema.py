"""EMA against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from shared.training import EMA


def test_hand_values_every_call():
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    ema = EMA([p], decay=0.5)
    with torch.no_grad():
        p.copy_(torch.tensor([4.0, 2.0]))
    ema.update()  # s = 0.5*[0, 10] + 0.5*[4, 2] = [2, 6]
    assert torch.equal(ema.shadow[0], torch.tensor([2.0, 6.0]))
    with torch.no_grad():
        p.copy_(torch.tensor([6.0, 6.0]))
    ema.update()  # s = 0.5*[2, 6] + 0.5*[6, 6] = [4, 6]
    assert torch.equal(ema.shadow[0], torch.tensor([4.0, 6.0]))


def test_update_every():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA([p], decay=0.9, update_every=3)
    with torch.no_grad():
        p.fill_(1.0)
    assert [ema.update() for _ in range(6)] == [False, False, True, False, False, True]
    # two averages: s1 = 0.9*0 + 0.1*1 = 0.1; s2 = 0.9*0.1 + 0.1*1 = 0.19
    assert ema.shadow[0].item() == pytest.approx(0.19, abs=1e-7)
    assert (ema.num_calls, ema.num_updates) == (6, 2)


def test_warmup_decay():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA([p], decay=0.99, warmup=True)
    with torch.no_grad():
        p.fill_(1.0)
    assert ema.current_decay() == pytest.approx(0.1)  # (1+0)/(10+0)
    ema.update()  # s = 0.1*0 + 0.9*1 = 0.9
    assert ema.current_decay() == pytest.approx(2 / 11)
    ema.update()  # s = (2/11)*0.9 + (9/11)*1
    assert ema.shadow[0].item() == pytest.approx(2 / 11 * 0.9 + 9 / 11, abs=1e-7)
    plain = EMA([p], decay=0.99)
    assert plain.current_decay() == 0.99


def test_store_copy_restore_and_context():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = EMA(model.parameters(), decay=0.5)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    ema.update()  # [2, 3]
    with ema.average_parameters():
        assert torch.equal(model.weight, torch.tensor([[2.0, 3.0]]))
    assert torch.equal(model.weight, torch.tensor([[3.0, 4.0]]))
    ema.store()
    ema.copy_to()
    assert torch.equal(model.weight, torch.tensor([[2.0, 3.0]]))
    ema.restore()
    assert torch.equal(model.weight, torch.tensor([[3.0, 4.0]]))
    with pytest.raises(RuntimeError, match="without a preceding store"):
        ema.restore()
    other = torch.nn.Linear(2, 1, bias=False)
    ema.copy_to(other.parameters())
    assert torch.equal(other.weight, torch.tensor([[2.0, 3.0]]))


def test_bf16_param_keeps_fp32_shadow():
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.bfloat16))
    ema = EMA([p], decay=0.999)
    with torch.no_grad():
        p.fill_(2.0)
    ema.update()  # 0.999*1 + 0.001*2 = 1.001: representable in fp32, lost in bf16
    assert ema.shadow[0].dtype == torch.float32
    assert ema.shadow[0].item() == pytest.approx(1.001, abs=1e-6)


def test_state_dict_roundtrip():
    p = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    ema = EMA([p], decay=0.5, update_every=2)
    with torch.no_grad():
        p.fill_(4.0)
    ema.update(), ema.update(), ema.update()
    q = torch.nn.Parameter(torch.zeros(2))
    other = EMA([q], decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow[0], ema.shadow[0])
    assert (other.decay, other.update_every, other.num_calls, other.num_updates) == (0.5, 2, 3, 1)
    assert other.update() is True  # 4th call: averages, like the original would
    with pytest.raises(ValueError, match="state has 1 tensors, this EMA tracks 2"):
        EMA([q, p]).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("kwargs", [{"decay": 1.0}, {"decay": -0.1}, {"update_every": 0}])
def test_invalid_args(kwargs):
    with pytest.raises(ValueError):
        EMA([torch.zeros(1)], **kwargs)
