"""Load a diffusers text-to-image pipeline from a local directory (no hub access).

``load_pipeline(local_dir)`` reads ``model_index.json``, checks it before any weights are read, and
passes ``None`` for components saved as null (the pixel-space shapes base has no VAE; SD3 without
T5; SD 1.x saved without safety checker / feature extractor). Real weights (SD3.5, FLUX.1, SD 1.x) work the
same way from a downloaded snapshot directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shared.errors import CheckpointError


def load_pipeline(local_dir: str | Path, *, torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """Load a ``StableDiffusion3Pipeline`` / ``FluxPipeline`` / ``StableDiffusionPipeline`` (or any diffusers
    pipeline) saved in ``local_dir``."""
    import diffusers

    path = Path(local_dir)
    index = path / "model_index.json"
    if not path.is_dir():
        raise CheckpointError(f"pipeline directory {path} does not exist; pass the folder written by save_pretrained (it holds model_index.json)")
    if not index.is_file():
        raise CheckpointError(f"{path} has no model_index.json; is it a diffusers pipeline folder (save_pretrained / a hub snapshot)?")
    try:
        spec = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{index} is not valid JSON ({e}); the pipeline folder is corrupt") from e
    cls_name = spec.get("_class_name")
    cls = getattr(diffusers, str(cls_name), None)
    if cls is None:
        raise CheckpointError(f"{index}: unknown pipeline class {cls_name!r}")
    none_components = {k: None for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v[0] is None}
    missing = [k for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None and not (path / k).is_dir()]
    if missing:
        raise CheckpointError(f"{path}: component folder(s) {missing} listed in model_index.json are missing")
    try:
        pipe = cls.from_pretrained(path, local_files_only=True, **none_components)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"could not load the pipeline in {path}: {e}") from e
    pipe.set_progress_bar_config(disable=True)
    # Cast after loading: the dtype keyword is `torch_dtype` before diffusers 0.40 and `dtype` after.
    # (Skipped when nothing changes: diffusers warns on every dtype cast of an SD3 transformer.)
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    if torch_dtype is not None and all(p.dtype == torch_dtype for m in modules for p in m.parameters()):
        torch_dtype = None
    if torch_dtype is not None or device is not None:
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # the cast is deliberate; diffusers warns about it per model
        try:
            pipe.to(device=device, dtype=torch_dtype)
        finally:
            diffusers_logging.set_verbosity(level)
    return pipe
