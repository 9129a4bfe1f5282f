from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A randomly initialised small Qwen2-VL + trained tokenizer + processor, saved like a real checkpoint."""
    from mllm_rft.sft import tokenizer_corpus
    from mllm_rft.tasks import make_split
    from mllm_rft.tiny import TinyVLMConfig, build_model, build_processor, train_tokenizer

    samples = [s for t in ("counting", "attribute", "spatial", "grounding") for s in make_split(t, "train", 40, seed=0)]
    tok = train_tokenizer(tokenizer_corpus(samples), vocab_size=400)
    processor = build_processor(tok, image_size=32, patch_size=8)
    cfg = TinyVLMConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                        vision_depth=1, vision_embed_dim=16, vision_heads=2, patch_size=8)
    model = build_model(tok, cfg, seed=0)
    out = tmp_path_factory.mktemp("tiny_vlm")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
