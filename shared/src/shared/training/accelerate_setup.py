"""Accelerator construction, seeding and a main-process progress bar.

The same trainer code runs on one CPU, one GPU or many: distribution comes from the launcher, not from code::

    python -m pkg.train --config run.toml                                   # single process (CPU or one GPU)
    accelerate launch --num_processes 8 -m pkg.train --config run.toml      # DDP over 8 GPUs
    accelerate launch --use_fsdp --num_processes 8 -m pkg.train ...         # FSDP (or an `accelerate config` file)

Inside, ``accelerator.prepare(model, optimizer, dataloader)`` wraps what the launcher asked for. Under FSDP take model
weights for checkpoints with ``accelerator.get_state_dict(model)``; save only on ``accelerator.is_main_process``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

__all__ = ["MIXED_PRECISION", "progress", "set_seed", "setup_accelerator"]

MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")


def set_seed(seed: int, *, device_specific: bool = False) -> int:
    """Seed Python ``random``, NumPy and torch (all devices); return the seed used.

    ``device_specific=True`` adds the process index, so each rank draws different noise (what RL rollouts want:
    Flow-GRPO seeds this way); with one process it changes nothing.
    """
    from accelerate.utils import set_seed as _accelerate_set_seed

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: must be a non-negative int. Fix: set seed to e.g. 0.")
    if device_specific:
        from accelerate import PartialState

        seed += PartialState().process_index
    _accelerate_set_seed(seed)
    return seed


def setup_accelerator(*, mixed_precision: str = "no", gradient_accumulation_steps: int = 1, seed: int | None = None,
                      device_specific_seed: bool = False, log_with: str | list[str] | None = None,
                      project_dir: str | Path | None = None, cpu: bool = False, **kwargs: Any) -> Any:
    """An ``accelerate.Accelerator`` configured from plain values; works on CPU without a launcher.

    Args:
        mixed_precision: "no", "fp16", "bf16" or "fp8" (checked here, before any model is built).
        gradient_accumulation_steps: micro-batches per optimiser step (use ``with accelerator.accumulate(model)``).
        seed: if given, :func:`set_seed` (with ``device_specific=device_specific_seed``) after construction.
        log_with: accelerate's own trackers (usually None: :class:`~shared.training.metrics.MetricsLogger` logs).
        project_dir: where accelerate keeps its project files / trackers.
        cpu: force CPU even when a GPU is present.
        kwargs: passed to ``Accelerator`` unchanged.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision = {mixed_precision!r}: must be one of {', '.join(MIXED_PRECISION)}. "
                          "Fix: use 'bf16' on recent GPUs, 'no' on CPU.")
    if not isinstance(gradient_accumulation_steps, int) or gradient_accumulation_steps < 1:
        raise ConfigError(f"gradient_accumulation_steps = {gradient_accumulation_steps!r}: must be an int >= 1. "
                          "Fix: set it to 1 for no accumulation.")
    project_config = ProjectConfiguration(project_dir=str(project_dir)) if project_dir is not None else None
    accelerator = Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps,
                              log_with=log_with, project_config=project_config, cpu=cpu, **kwargs)
    if seed is not None:
        set_seed(seed, device_specific=device_specific_seed)
    return accelerator


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str | None = None,
             disable: bool | None = None, initial: int = 0, **kwargs: Any) -> Any:
    """A ``tqdm`` bar shown only on the main process (``disable=None``), e.g. ``progress(range(s0, n), initial=s0)``.

    ``initial`` makes a resumed run's bar start where it stopped; ``kwargs`` go to ``tqdm``.
    """
    from tqdm.auto import tqdm

    if disable is None:
        from accelerate import PartialState

        disable = not PartialState().is_main_process
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable) + initial  # type: ignore[arg-type]
    return tqdm(iterable, total=total, desc=desc, disable=disable, initial=initial, dynamic_ncols=True, **kwargs)
