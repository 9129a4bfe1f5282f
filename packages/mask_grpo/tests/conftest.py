"""Shared fixtures of the mask_grpo tests."""

from __future__ import annotations

import pytest
import torch

from mask_grpo.toy import ToyPolicy

torch.set_num_threads(1)


@pytest.fixture
def toy_policy() -> ToyPolicy:
    return ToyPolicy()
