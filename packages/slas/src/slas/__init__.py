"""Super-Linear Advantage Shaping (SLAS), reconstructed from the abstract of arXiv 2605.10937 (spec card slas.md).

Modules, one job each: ``shaping`` (the SLAS advantage Ã = sign(Â)·|Â|^(1+γ) on batch-normalised group-centred
rewards, its options and the γ schedule; card §4) and ``fisher_rao`` (the advantage-weighted Fisher–Rao trust-region
step on a categorical policy, its closed form and generic solvers; card §5). Everything beyond the abstract is our
reading and says so.
"""

from slas.fisher_rao import (
    advantage_weight,
    chi2_step,
    closed_form_step,
    max_interior_eta,
    project_simplex,
    solve_trust_region,
    trust_region_objective,
    weighted_baseline,
    weighted_divergence,
)
from slas.shaping import SLASOutput, ShapingConfig, gamma_at, power, slas_advantages

__all__ = [
    "SLASOutput",
    "ShapingConfig",
    "advantage_weight",
    "chi2_step",
    "closed_form_step",
    "gamma_at",
    "max_interior_eta",
    "power",
    "project_simplex",
    "slas_advantages",
    "solve_trust_region",
    "trust_region_objective",
    "weighted_baseline",
    "weighted_divergence",
]
