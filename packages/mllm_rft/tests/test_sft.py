"""SFT targets are correct by the verifiers, and a few SFT steps fit them."""

from __future__ import annotations

import json

import pytest
import torch

from shared.errors import ConfigError
from shared.training import load_config

from mllm_rft.config import SFTConfig
from mllm_rft.models import load_vlm
from mllm_rft.rewards import format_reward
from mllm_rft.sft import reference_completion, run_sft, sft_loss
from mllm_rft.tasks import TASKS, make_split, verify


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("split", ["train", "ood"])
def test_reference_completions_are_right_and_well_formed(task, split):
    for s in make_split(task, split, 40, seed=3):
        text = reference_completion(s)
        assert format_reward(text) == 1.0
        assert verify(s, text) == 1.0


def test_counting_reasoning_lists_exactly_the_counted_objects():
    for s in make_split("counting", "test", 40, seed=4):
        think = reference_completion(s).split("</think>")[0].removeprefix("<think>")
        items = think.split(", ")
        assert len(items) == int(s.answer)
        assert all(item.endswith(s.meta["shape"]) for item in items)
        if s.meta["color"]:
            assert all(item == f"{s.meta['color']} {s.meta['shape']}" for item in items)


def test_sft_steps_fit_the_references(tiny_vlm_dir):
    torch.manual_seed(0)
    model, processor = load_vlm(tiny_vlm_dir)
    batch = make_split("attribute", "train", 8, seed=0, image_size=32)
    refs = [reference_completion(s) for s in batch]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = sft_loss(model, processor, batch, refs).item()
    for _ in range(30):
        loss = sft_loss(model, processor, batch, refs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_run_sft_builds_saves_and_evaluates(tmp_path):
    cfg = load_config(SFTConfig, preset="shapes", overrides=[
        f"out={tmp_path}", "train.steps=3", "train.batch_size=4", "data.tasks=counting", "data.train_size=16",
        "data.test_size=4", "data.ood_size=4", "model.hidden_size=32", "model.intermediate_size=64",
        "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1", "model.vision_depth=1",
        "model.vision_embed_dim=16", "model.vocab_size=300", "progress=false", "max_new_tokens=4"])
    summary = run_sft(cfg)
    assert set(summary) >= {"counting/test", "counting/ood", "final_loss"}
    model, processor = load_vlm(tmp_path)
    assert json.loads((tmp_path / "sft.json").read_text())["result"]["steps"] == 3
    assert processor.tokenizer.padding_side == "left"


def test_sft_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="data.source"):
        load_config(SFTConfig, overrides=["data.source=jsonl", "data.path=x.jsonl"])
    with pytest.raises(ConfigError, match="model.hidden_size"):
        load_config(SFTConfig, overrides=["model.hidden_size=30", "model.num_heads=4"])
