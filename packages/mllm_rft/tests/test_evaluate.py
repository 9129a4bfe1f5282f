"""Evaluation: greedy accuracy is the verifier's mean over greedy completions, avg@k averages k seeded samples per
question, and the per-answer breakdown counts what the model says."""

from __future__ import annotations

import pytest

from mllm_rft import evaluate as ev
from mllm_rft.models import load_vlm
from mllm_rft.tasks import make_split, verify


@pytest.fixture(scope="module")
def setup(tiny_vlm_dir):
    model, processor = load_vlm(tiny_vlm_dir)
    return model, processor, make_split("counting", "test", 6, seed=0, image_size=32)


def test_greedy_accuracy_is_the_verifier_mean(setup):
    model, processor, samples = setup
    res = ev.evaluate(model, processor, samples, batch_size=4, max_new_tokens=6)
    again = ev.evaluate(model, processor, samples, batch_size=6, max_new_tokens=6)
    assert res.completions == again.completions  # greedy: independent of batching
    assert res.scores == [verify(s, c) for s, c in zip(samples, res.completions)]
    assert res.accuracy == pytest.approx(sum(res.scores) / len(samples))
    assert len(res.completions) == len(samples)


def test_avg_at_k_is_the_mean_over_all_samples(setup, monkeypatch):
    model, processor, samples = setup
    seen: list[list[str]] = []
    real = ev.decode_completions

    def spy(processor, rollout):
        texts = real(processor, rollout)
        seen.append(texts)
        return texts

    monkeypatch.setattr(ev, "decode_completions", spy)
    res = ev.evaluate(model, processor, samples, batch_size=8, max_new_tokens=6, num_samples=3, seed=5)
    flat = [t for batch in seen for t in batch]
    assert len(flat) == 3 * len(samples)
    repeated = [s for s in samples for _ in range(3)]
    assert res.accuracy == pytest.approx(sum(verify(s, t) for s, t in zip(repeated, flat)) / len(flat))
    assert res.completions == flat[::3]  # the first sample of each question
    again = ev.evaluate(model, processor, samples, batch_size=8, max_new_tokens=6, num_samples=3, seed=5)
    assert again.completions == res.completions  # seeded


def _sample(answer: str):
    s = make_split("counting", "test", 1, seed=0, image_size=32)[0]
    s.answer = answer
    return s


def test_answer_breakdown_hand_computed():
    samples = [_sample("1"), _sample("1"), _sample("2"), _sample("3")]
    completions = ["<answer>1</answer>", "<answer>3</answer>", "<answer>3</answer>", "no tags"]
    scores = [1.0, 0.0, 0.0, 0.0]
    out = ev.answer_breakdown(samples, completions, scores)
    assert list(out) == ["1", "2", "3"]
    assert out["1"] == {"questions": 0.5, "accuracy": 0.5, "answered": 0.25}
    assert out["2"] == {"questions": 0.25, "accuracy": 0.0, "answered": 0.0}
    assert out["3"] == {"questions": 0.25, "accuracy": 0.0, "answered": 0.5}


def test_answer_breakdown_skips_open_answers():
    samples = [_sample(str(i)) for i in range(ev.MAX_ANSWER_VALUES + 1)]
    assert ev.answer_breakdown(samples, [""] * len(samples), [0.0] * len(samples)) == {}
