"""Rollouts of flow-matching text-to-image models (and SD 1.x, in flow coordinates) with per-step log-probs."""

from shared.rollout.adapters import Conditioning, FluxAdapter, FlowModelAdapter, SD1Adapter, SD3Adapter, adapter_for
from shared.rollout.sampler import SamplerConfig, Trajectory, micro_batches, recompute_log_probs, sample, step_log_prob

__all__ = [
    "Conditioning",
    "FlowModelAdapter",
    "FluxAdapter",
    "SD1Adapter",
    "SD3Adapter",
    "SamplerConfig",
    "Trajectory",
    "adapter_for",
    "micro_batches",
    "recompute_log_probs",
    "sample",
    "step_log_prob",
]
