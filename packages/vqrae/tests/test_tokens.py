import numpy as np
import pytest
import torch

from vqrae.tokens import FORMAT, load_tokens, save_tokens


def test_round_trip_with_captions(tmp_path):
    ids = torch.randint(0, 50, (3, 4, 4))
    p = save_tokens(tmp_path / "t.npz", ids, codebook_size=50, grid=(4, 4), image_size=16, run="r",
                    captions=["a", "b", "c"])
    d = load_tokens(p)
    assert torch.equal(d["ids"], ids) and d["codebook_size"] == 50 and d["image_size"] == 16
    assert d["captions"] == ["a", "b", "c"] and d["run"] == "r"
    assert not list(tmp_path.glob("*.tmp*"))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        save_tokens(tmp_path / "t.npz", torch.full((1, 4), 8), codebook_size=8, grid=(2, 2), image_size=8)
    with pytest.raises(FileNotFoundError, match="vqrae encode"):
        load_tokens(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", ids=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=FORMAT.replace(".", r"\.")):
        load_tokens(tmp_path / "other.npz")
