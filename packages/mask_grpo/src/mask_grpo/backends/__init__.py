"""Model backends behind `mask_grpo.policy.MaskedPolicy`, loaded by name from local folders (imports are lazy, so
a missing optional stack only matters when its backend is asked for):

- `shapes`: the shapes-world masked base (`backends.shapes`, committed under assets/shapes_masked_base);
- `amused`: diffusers' aMUSEd pipeline folder (`backends.amused`);
- `showo`: a Show-o checkpoint folder with a MAGVIT-v2 folder and a Phi tokenizer (`backends.showo`).
"""

from __future__ import annotations

import torch

from mask_grpo.policy import MaskedPolicy

__all__ = ["load_policy"]


def load_policy(model_cfg, device: torch.device | str = "cpu") -> MaskedPolicy:
    """The backend named by `model_cfg.backend`, loaded from `model_cfg.path` (and `vq_path`, `tokenizer_path` for
    Show-o), on `device`."""
    from shared.demo import resolve_model

    if model_cfg.backend == "shapes":
        from mask_grpo.backends.shapes import ShapesMaskedPolicy

        path = resolve_model(model_cfg.path, rebuild="tools/train_shapes_masked_base.py")
        return ShapesMaskedPolicy.from_pretrained(path).to(device)
    if model_cfg.backend == "amused":
        from mask_grpo.backends.amused import AmusedPolicy

        return AmusedPolicy.from_pretrained(model_cfg.path, device=device)
    if model_cfg.backend == "showo":
        from mask_grpo.backends.showo import from_pretrained

        return from_pretrained(model_cfg.path, model_cfg.vq_path, model_cfg.tokenizer_path or None,
                               num_vq_tokens=model_cfg.num_vq_tokens or None).to(device)
    raise ValueError(f"model.backend={model_cfg.backend!r}: expected shapes, amused or showo")
