"""Flow-matching GRPO trainer on the shared core (Flow-GRPO and DanceGRPO by configuration).

    python -m shared.flow_grpo --preset shapes            # tiny shapes-world base, CPU, ≈ 15 min on 1 core
    python -m shared.flow_grpo --help                     # every option

Modules, one job each: ``config`` (validated RunConfig, presets flow_grpo / dance_grpo / shapes; subclassable),
``units`` (UnitSelector protocol, unit validation, slots of variable layouts), ``objective`` (unit log-prob and
ratio, per-slot clipped loss with batched chunk forward, KL reference), ``prompts`` (prompts per iteration, groups
over processes), ``model`` (pipeline, LoRA / full fine-tune), ``evaluation`` (plain and hybrid ODE eval, grids,
curves), ``train`` (the loop; ``train(cfg, pipeline=None, selector=None)``), ``cli``.
"""

from shared.flow_grpo.config import RunConfig
from shared.flow_grpo.evaluation import Hybrid
from shared.flow_grpo.objective import Reference, segment_mean, slot_loss, slot_scores, unit_log_prob, unit_ratio
from shared.flow_grpo.units import (
    Chunks,
    InOrderSteps,
    RandomSteps,
    Slot,
    UnitSelector,
    Units,
    build_selector,
    check_units,
    slots,
)

__all__ = [
    "Chunks",
    "Hybrid",
    "InOrderSteps",
    "RandomSteps",
    "Reference",
    "RunConfig",
    "Slot",
    "UnitSelector",
    "Units",
    "build_selector",
    "check_units",
    "segment_mean",
    "slot_loss",
    "slot_scores",
    "slots",
    "unit_log_prob",
    "unit_ratio",
]
