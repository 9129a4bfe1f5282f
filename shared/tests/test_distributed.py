"""shared.training.distributed: the collectives in one process and in a real two-process gloo group."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.multiprocessing import ProcessRaisedException

from shared.training.distributed import any_process, average_gradients, run_local_group, world_size


def test_single_process_collectives_are_identities():
    assert world_size() == 1 and any_process(True) and not any_process(False)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, 3.0])
    average_gradients([p])
    assert torch.equal(p.grad, torch.tensor([1.0, 3.0]))


def _worker(rank: int, world: int, out: str) -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = None if rank == 0 else torch.tensor([2.0, 4.0])  # rank 0 has no gradient: counts as zeros
    average_gradients([p])
    info = {"rank": rank, "world": world, "dist_world": world_size(), "env": os.environ["RANK"],
            "any": any_process(rank == 1), "none": any_process(False), "grad": p.grad.tolist()}
    with open(os.path.join(out, f"{rank}.json"), "w") as f:
        json.dump(info, f)


def test_two_process_group_runs_the_collectives(tmp_path):
    run_local_group(_worker, 2, str(tmp_path))
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(res):
        assert (info["rank"], info["world"], info["dist_world"], info["env"]) == (r, 2, 2, str(r))
        assert info["any"] is True and info["none"] is False
        assert info["grad"] == [1.0, 2.0]  # (0 + 2) / 2, (0 + 4) / 2
    assert not torch.distributed.is_initialized()  # the parent never joined the group


def _failing(rank: int, world: int) -> None:
    if rank == 1:
        raise RuntimeError("worker failed on purpose")


def test_a_failing_worker_raises_in_the_parent():
    with pytest.raises(ProcessRaisedException, match="on purpose"):
        run_local_group(_failing, 2)
