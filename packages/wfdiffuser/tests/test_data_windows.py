"""SequenceDataset on a hand-built 2-episode example: discounted RTG, termination penalty, labels, padding, mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wfdiffuser.data.episodes import Episode
from wfdiffuser.data.windows import ReturnLabel, SequenceDataset, discounted_rtg


def _episodes():
    a = Episode(observations=[[0.0], [1.0], [2.0], [3.0]], actions=[[10.0], [20.0], [30.0]], rewards=[1.0, 2.0, 3.0],
                terminations=[False, False, True], truncations=[False, False, False])
    b = Episode(observations=[[5.0], [6.0], [7.0]], actions=[[40.0], [50.0]], rewards=[4.0, 5.0],
                terminations=[False, False], truncations=[False, True])
    return [a, b]


def _sd(**kw):
    args = dict(horizon=3, normalizer="limits", discount=0.5, termination_penalty=-10.0, return_label="minmax")
    return SequenceDataset(_episodes(), **{**args, **kw})


def test_discounted_rtg_by_hand():
    np.testing.assert_allclose(discounted_rtg(np.array([1.0, 2.0, -7.0]), 0.5), [0.25, -1.5, -7.0])


def test_rtg_penalty_and_minmax_labels_by_hand():
    sd = _sd()
    # A (terminated): rewards 1, 2, 3 - 10 → G = 0.25, -1.5, -7; B (truncated, no penalty): G = 6.5, 5.
    np.testing.assert_allclose(sd.returns_raw, [0.25, -1.5, -7.0, 6.5, 5.0])
    expected = (np.array([0.25, -1.5, -7.0, 6.5, 5.0]) + 7.0) / 13.5
    np.testing.assert_allclose(torch.cat([sd[i]["returns"] for i in range(len(sd))]).numpy(), expected, rtol=1e-6)
    assert sd.return_fn(6.5) == pytest.approx(1.0) and sd.return_fn.inverse(0.0) == pytest.approx(-7.0)


def test_penalty_zero_disables_and_scale_label():
    sd = _sd(termination_penalty=0.0, return_label="scale", returns_scale=4.0)
    np.testing.assert_allclose(sd.returns_raw, [2.75, 3.5, 3.0, 6.5, 5.0])  # G_0 = 1 + .5·2 + .25·3
    np.testing.assert_allclose(sd.batch(range(5))["returns"][:, 0].numpy(), np.array([2.75, 3.5, 3.0, 6.5, 5.0]) / 4)
    assert sd.return_fn.state_dict() == {"kind": "scale", "low": 2.75, "high": 6.5, "scale": 4.0}
    assert ReturnLabel.from_state(sd.return_fn.state_dict()) == sd.return_fn


def test_windows_padding_and_mask():
    sd = _sd()
    assert len(sd) == 5 and sd.obs_dim == 1 and sd.act_dim == 1
    item = sd[0]
    assert set(item) == {"states", "actions", "returns", "mask"}
    assert item["states"].shape == (3, 1) and item["actions"].shape == (3, 1) and item["returns"].shape == (1,)
    assert item["states"].dtype == torch.float32 and item["mask"].dtype == torch.bool
    raw_s = lambda i: sd.state_normalizer.unnormalize(sd[i]["states"]).numpy()[:, 0]  # noqa: E731
    raw_a = lambda i: sd.action_normalizer.unnormalize(sd[i]["actions"]).numpy()[:, 0]  # noqa: E731
    np.testing.assert_allclose(raw_s(0), [0, 1, 2], atol=1e-5)
    np.testing.assert_allclose(raw_a(0), [10, 20, 30], atol=1e-5)
    assert sd[0]["mask"].tolist() == [True, True, True]
    # A from t = 2: s_2, then s_3 (the last observation) repeated; a_2, then normalised-zero actions.
    np.testing.assert_allclose(raw_s(2), [2, 3, 3], atol=1e-5)
    np.testing.assert_allclose(sd[2]["actions"].numpy()[1:, 0], [0.0, 0.0])
    assert sd[2]["mask"].tolist() == [True, False, False]
    np.testing.assert_allclose(raw_s(4), [6, 7, 7], atol=1e-5)
    assert sd[3]["mask"].tolist() == [True, True, False]
    # limits over all observations 0..7 and actions 10..50
    np.testing.assert_allclose(sd[3]["states"].numpy()[:, 0], 2 * np.array([5, 6, 7]) / 7 - 1, atol=1e-6)
    np.testing.assert_allclose(sd[4]["actions"].numpy()[0, 0], (50 - 30) / 20, atol=1e-6)


def test_pad_none_keeps_only_full_windows():
    sd = _sd(horizon=2, pad="none")
    assert len(sd) == 3  # A: t = 0, 1; B: t = 0
    assert bool(sd.batch(range(3))["mask"].all())
    np.testing.assert_allclose(sd.returns_raw, [0.25, -1.5, 6.5])
    with pytest.raises(ValueError, match="pad='edge'"):
        _sd(horizon=4, pad="none")


def test_batch_matches_getitem_and_stats():
    sd = _sd(normalizer="cdf")
    b = sd.batch([4, 0, 2])
    for j, i in enumerate([4, 0, 2]):
        for k in b:
            assert torch.equal(b[k][j], sd[i][k])
    stats = sd.dataset_stats()
    assert stats["n_episodes"] == 2 and stats["n_transitions"] == 5 and stats["n_windows"] == 5
    assert stats["return_mean"] == pytest.approx(7.5) and stats["return_min"] == 6 and stats["return_max"] == 9
    with pytest.raises(IndexError):
        sd[5]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="horizon"):
        _sd(horizon=0)
    with pytest.raises(ValueError, match="normalizer"):
        _sd(normalizer="zscore")
    with pytest.raises(ValueError, match="return_label"):
        _sd(return_label="raw")
    with pytest.raises(ValueError, match="T\\+1"):
        Episode(observations=np.zeros((3, 1)), actions=np.zeros((3, 1)), rewards=np.zeros(3),
                terminations=np.zeros(3, bool), truncations=np.zeros(3, bool))
