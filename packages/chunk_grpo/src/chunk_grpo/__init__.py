"""Chunk-level GRPO (GCPO) for flow-matching text-to-image, on the shared flow-GRPO trainer (chunk_grpo.md).

    chunk-grpo train --preset shapes                 # tiny shapes-world base, CPU, ≈ 40 min on 1 core
    chunk-grpo l1rel --model assets/shapes_base --out outputs/l1rel.png

Modules, one job each: ``l1rel`` (Eq. 16 curves, group / batch pooling), ``chunking`` (fixed, uniform, our adaptive
rule), ``sampling`` (which chunks train: Eq. 17 weights, draws without replacement, exact inclusion probabilities),
``selector`` (:class:`ChunkSelector`, the trainer's unit selector), ``config`` (:class:`GCPOConfig` and presets
shapes / flux-dev-hpsv3 / sd35m), ``train`` (the shared trainer with the selector), ``l1rel_plot``, ``cli``.
"""

from chunk_grpo.chunking import adaptive, fixed, merge_small, to_steps, uniform
from chunk_grpo.config import ChunkConfig, GCPOConfig
from chunk_grpo.l1rel import batch_mean, group_mean, l1rel, pooled
from chunk_grpo.sampling import (
    chunk_means,
    chunk_weights,
    draw_uniform,
    draw_weighted,
    inclusion_probabilities,
    num_trained,
    subset_probabilities,
)
from chunk_grpo.selector import ChunkSelector
from chunk_grpo.train import build_selector, train

__all__ = [
    "ChunkConfig",
    "ChunkSelector",
    "GCPOConfig",
    "adaptive",
    "batch_mean",
    "build_selector",
    "chunk_means",
    "chunk_weights",
    "draw_uniform",
    "draw_weighted",
    "fixed",
    "group_mean",
    "inclusion_probabilities",
    "l1rel",
    "merge_small",
    "num_trained",
    "pooled",
    "subset_probabilities",
    "to_steps",
    "train",
    "uniform",
]
