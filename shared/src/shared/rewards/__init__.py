"""Rewards: a `Reward` protocol, a name registry and the built-ins (shared_core.md §10).

    reward = build_reward("shapes")                     # or "jpeg_compressibility", "multi", "pickscore", …
    r = reward(images, prompts, metadata)               # images (B, 3, H, W) in [0, 1] → (B,) float32

Built-ins (registered on import): jpeg_compressibility, jpeg_incompressibility, shapes, multi, and the lazy local-
weights scorers pickscore, clip_score, hpsv2 (transformers / open_clip are imported only when one is built/used).
"""

from shared.rewards.base import Reward, check_batch, pil_to_tensor, tensor_to_pil, tensor_to_uint8
from shared.rewards.jpeg import JpegCompressibility, JpegIncompressibility, jpeg_sizes_kb
from shared.rewards.multi import WeightedReward
from shared.rewards.pretrained import ClipScoreReward, HPSv2Reward, PickScoreReward
from shared.rewards.registry import available_rewards, build_reward, register_reward
from shared.rewards.shapes_reward import ShapesReward

__all__ = [
    "ClipScoreReward",
    "HPSv2Reward",
    "JpegCompressibility",
    "JpegIncompressibility",
    "PickScoreReward",
    "Reward",
    "ShapesReward",
    "WeightedReward",
    "available_rewards",
    "build_reward",
    "check_batch",
    "jpeg_sizes_kb",
    "pil_to_tensor",
    "register_reward",
    "tensor_to_pil",
    "tensor_to_uint8",
]
