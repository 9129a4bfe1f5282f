"""Rewards: protocol, registry, JPEG (in)compressibility, shapes verifier reward, weighted multi-reward."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import ConfigError, PromptFileError
from shared.rewards import (
    JpegCompressibility,
    Reward,
    ShapesReward,
    WeightedReward,
    available_rewards,
    build_reward,
    pil_to_tensor,
    register_reward,
    tensor_to_pil,
)
from shared.rewards.registry import _REGISTRY
from shared.shapes import eval_prompts, render


def _batch(records, size=32, seed=0):
    return pil_to_tensor([render(r, size=size, seed=seed + i) for i, r in enumerate(records)])


def test_builtins_registered_and_satisfy_the_protocol():
    assert {
        "jpeg_compressibility",
        "jpeg_incompressibility",
        "shapes",
        "multi",
        "pickscore",
        "clip_score",
        "hpsv2",
    } <= set(available_rewards())
    for name in ("jpeg_compressibility", "jpeg_incompressibility", "shapes"):
        r = build_reward(name)
        assert isinstance(r, Reward) and r.name == name
    assert isinstance(build_reward("multi", weights={"shapes": 1.0}), Reward)


def test_unknown_reward_lists_available():
    with pytest.raises(ConfigError, match="unknown reward 'nope'") as e:
        build_reward("nope")
    assert "jpeg_compressibility" in str(e.value) and "shapes" in str(e.value)


def test_register_custom_reward_and_reject_duplicates():
    @register_reward("_test_const")
    class Const:
        name = "_test_const"

        def __init__(self, value=1.0):
            self.value = value

        def __call__(self, images, prompts, metadata=None):
            return torch.full((images.shape[0],), self.value)

    try:
        assert "_test_const" in available_rewards()
        assert build_reward("_test_const", value=2.0)(torch.zeros(3, 3, 4, 4), ["a"] * 3).tolist() == [2.0] * 3
        with pytest.raises(ValueError, match="already registered"):
            register_reward("shapes")(Const)
    finally:
        _REGISTRY.pop("_test_const")


def test_pil_tensor_round_trip_and_batch_checks():
    ims = [render("a photo of a red square", size=16 + 16, seed=i) for i in range(3)]
    t = pil_to_tensor(ims)
    assert t.shape == (3, 3, 32, 32) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(tensor_to_pil(t), ims))
    r = JpegCompressibility()
    with pytest.raises(ValueError, match="B, 3, H, W"):
        r(t[0], ["x"])
    with pytest.raises(ValueError, match="3 prompts"):
        r(t, ["x"])
    with pytest.raises(ValueError, match="floating"):
        r((t * 255).to(torch.uint8), ["x"] * 3)
    with pytest.raises(ValueError, match="metadata"):
        r(t, ["x"] * 3, [{}])


def test_jpeg_rewards_match_pil_encoded_sizes():
    g = torch.Generator().manual_seed(0)
    images = torch.cat([torch.rand(2, 3, 32, 32, generator=g), torch.full((1, 3, 32, 32), 0.5)])
    expected = []
    for im in images:
        a = (im * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=95)
        expected.append(len(buf.getvalue()) / 1000)
    prompts = ["p"] * 3
    inc = build_reward("jpeg_incompressibility")(images, prompts)
    comp = build_reward("jpeg_compressibility")(images, prompts)
    assert inc.dtype == torch.float32 and inc.shape == (3,)
    assert inc.tolist() == pytest.approx(expected, abs=1e-6)
    assert comp.tolist() == pytest.approx([-e for e in expected], abs=1e-6)
    assert inc[0] > inc[2]  # noise is less compressible than a flat grey
    assert (build_reward("jpeg_incompressibility", quality=50)(images, prompts)[:2] < inc[:2]).all()  # quality matters
    with pytest.raises(ValueError):
        JpegCompressibility(quality=0)


def test_shapes_reward_binary_and_partial_credit():
    recs = eval_prompts(per_tag=2)
    images = _batch(recs)
    prompts = [r["prompt"] for r in recs]
    reward = build_reward("shapes")
    assert reward(images, prompts).tolist() == [1.0] * len(recs)
    assert reward(images, prompts, recs).tolist() == [1.0] * len(recs)
    blank = torch.ones(2, 3, 32, 32)
    wrong = ["a photo of a red square and a blue circle", "a photo of three circles"]
    assert reward(blank, wrong).tolist() == [0.0, 0.0]
    # a red square + green circle for "red square and blue circle": 3 of 4 conditions hold
    im = pil_to_tensor([render("a photo of a red square and a green circle", size=32, seed=0)])
    p = ["a photo of a red square and a blue circle"]
    assert build_reward("shapes")(im, p).tolist() == [0.0]
    assert build_reward("shapes", partial_credit=True)(im, p).tolist() == [0.75]
    counted = build_reward("shapes", partial_credit=True)(blank[:1], ["a photo of two circles"])
    assert counted.tolist() == [0.5]  # "≥ 2 circles" fails, "< 3 circles" holds


def test_shapes_reward_prefers_metadata_records_and_rejects_unparseable_prompts():
    recs = eval_prompts(per_tag=1)
    images = _batch(recs)
    reward = ShapesReward()
    junk = ["an unrelated caption"] * len(recs)
    metadata = [dict(r, seed=123, step=7) for r in recs]  # trainer's extra keys are ignored
    assert reward(images, junk, metadata).tolist() == [1.0] * len(recs)
    with pytest.raises(PromptFileError, match="an unrelated caption"):
        reward(images, junk)
    results = reward.evaluate(images, [r["prompt"] for r in recs])
    assert [r.tag for r in results] == [r["tag"] for r in recs]


def test_weighted_reward_sums_and_logs_components():
    recs = eval_prompts(per_tag=1)
    images = _batch(recs)
    prompts = [r["prompt"] for r in recs]
    multi = build_reward("multi", weights={"shapes": 2.0, "jpeg_compressibility": 0.5})
    total = multi(images, prompts)
    comps = multi.last_components
    shapes = build_reward("shapes")(images, prompts)
    jpeg = build_reward("jpeg_compressibility")(images, prompts)
    assert torch.allclose(comps["shapes"], shapes) and torch.allclose(comps["jpeg_compressibility"], jpeg)
    assert torch.allclose(total, 2.0 * shapes + 0.5 * jpeg) and torch.equal(comps["total"], total)
    assert set(multi.evaluate(images, prompts)) == {"shapes", "jpeg_compressibility", "total"}
    partial = WeightedReward({"shapes": 1.0}, reward_kwargs={"shapes": {"partial_credit": True}})
    assert partial.rewards["shapes"].partial_credit
    given = WeightedReward({"mine": 3.0}, rewards={"mine": build_reward("jpeg_incompressibility")})
    assert torch.allclose(given(images, prompts), -3.0 * jpeg)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": {}}, "empty"),
        ({"weights": {"nope": 1.0}}, "unknown reward 'nope'"),
        ({"weights": {"shapes": float("nan")}}, "finite"),
        ({"weights": {"shapes": 1.0}, "reward_kwargs": {"jpeg_compressibility": {}}}, "no weight"),
        ({"weights": {"total": 1.0}}, "reserved"),
    ],
)
def test_weighted_reward_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WeightedReward(**kwargs)


def test_shapes_reward_graded_counts_credit_closer_counts():
    """"three circles": 1, 2, 3 and 4 drawn circles. Plain partial credit gives 1 and 2 the same 0.5 (the exclude
    "< 4" holds, the count fails); graded counts give (k/3 + 1)/2, and 4 circles fail the exclude: (1 + 0)/2."""
    prompt = "a photo of three circles"
    plain = build_reward("shapes", partial_credit=True)
    graded = build_reward("shapes", partial_credit=True, graded_counts=True)
    got_plain, got_graded = [], []
    for word in ("a circle", "two circles", "three circles", "four circles"):
        im = pil_to_tensor([render(f"a photo of {word}", size=64, seed=3)])
        got_plain.append(plain(im, [prompt]).item())
        got_graded.append(graded(im, [prompt]).item())
    assert got_plain == [0.5, 0.5, 1.0, 0.5]
    assert got_graded == pytest.approx([(1 / 3 + 1) / 2, (2 / 3 + 1) / 2, 1.0, 0.5])
    with pytest.raises(ValueError, match="partial_credit"):
        build_reward("shapes", graded_counts=True)
