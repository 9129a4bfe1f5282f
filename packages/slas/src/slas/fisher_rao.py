"""The advantage-weighted Fisher–Rao trust-region step on a categorical policy (spec card slas.md §5) [our reading].

The abstract says SLAS extends the Fisher–Rao metric with advantage-dependent weighting; the metric below and its
closed-form step are our reconstruction (derivation: docs/derivation.md). For one state with actions a = 1…K,
old policy π_old (all entries > 0, summing to 1), advantages A and step size η > 0:

  (5.1)  max_π  ⟨π, A⟩ − (1/η)·D_w(π ‖ π_old)   s.t.  Σ_a π_a = 1
  (5.2)  D_w(π ‖ π_old) = ½·Σ_a (π_a − π_old,a)² / (π_old,a·w(A_a)),   w(A) = max(|A|, w_min)^γ
  (5.3)  π_a = π_old,a·(1 + η·w(A_a)·(A_a − b_w)),   b_w = Σ_a π_old,a·w(A_a)·A_a / Σ_a π_old,a·w(A_a)

γ = 0 gives w ≡ 1, the plain χ² (Fisher–Rao) metric and the step linear in A:
  (5.4)  π_a = π_old,a·(1 + η·(A_a − b)),   b = Σ_a π_old,a·A_a.
w_min > 0 replaces w(0) = 0 (which would freeze that action; card §5 edge cases) [our reading]. (5.3) solves (5.1)
without the constraint π ≥ 0; it is the solution of the constrained problem only while every π_a ≥ 0, i.e. for
η ≤ `max_interior_eta`.

`solve_trust_region` solves (5.1) numerically with a generic optimiser that never uses (5.3): SciPy's SLSQP (a declared
dependency), an equality-constrained Newton–KKT iteration on autograd derivatives, or accelerated
projected gradient ascent onto the probability simplex. All in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "SOLVER_METHODS",
    "advantage_weight",
    "chi2_step",
    "closed_form_step",
    "max_interior_eta",
    "project_simplex",
    "solve_trust_region",
    "trust_region_objective",
    "weighted_baseline",
    "weighted_divergence",
]

SOLVER_METHODS = ("auto", "slsqp", "newton", "projected_gradient")


def _check(pi_old: Tensor, adv: Tensor, eta: float | None = None, gamma: float | None = None,
           w_min: float | None = None) -> tuple[Tensor, Tensor]:
    pi_old = torch.as_tensor(pi_old, dtype=torch.float64)
    adv = torch.as_tensor(adv, dtype=torch.float64)
    if pi_old.ndim < 1 or pi_old.shape[-1] < 2:
        raise ValueError(f"pi_old must have shape (..., K) with K >= 2 actions, got {tuple(pi_old.shape)}")
    if adv.shape != pi_old.shape:
        raise ValueError(f"adv must have the shape of pi_old {tuple(pi_old.shape)}, got {tuple(adv.shape)}")
    if not bool((pi_old > 0).all()):
        raise ValueError("pi_old must be > 0 everywhere (the metric divides by π_old)")
    if not torch.allclose(pi_old.sum(-1), torch.ones((), dtype=torch.float64), rtol=0, atol=1e-9):
        raise ValueError("pi_old must sum to 1 over the last dimension")
    if not bool(torch.isfinite(adv).all()):
        raise ValueError("adv must be finite")
    if eta is not None and not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
    if gamma is not None and not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if w_min is not None and not (math.isfinite(w_min) and w_min > 0):
        raise ValueError(f"w_min must be a finite number > 0, got {w_min!r}")
    return pi_old, adv


def advantage_weight(adv: Tensor, gamma: float, w_min: float = 1e-3) -> Tensor:
    """w(A) = max(|A|, w_min)^γ of (5.2): > 1 loosens the trust region along |A| > 1, < 1 tightens it. γ = 0 → 1."""
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if not (math.isfinite(w_min) and w_min > 0):
        raise ValueError(f"w_min must be a finite number > 0, got {w_min!r}")
    adv = torch.as_tensor(adv, dtype=torch.float64)
    return adv.abs().clamp(min=w_min) ** gamma


def weighted_baseline(pi_old: Tensor, adv: Tensor, w: Tensor) -> Tensor:
    """b_w = Σ_a π_old,a·w_a·A_a / Σ_a π_old,a·w_a of (5.3) (over the last dimension)."""
    return (pi_old * w * adv).sum(-1, keepdim=True) / (pi_old * w).sum(-1, keepdim=True)


def closed_form_step(pi_old: Tensor, adv: Tensor, eta: float, gamma: float = 0.0, *, w_min: float = 1e-3) -> Tensor:
    """π of (5.3): π_a = π_old,a·(1 + η·w(A_a)·(A_a − b_w)). Shapes (..., K); float64.

    Sums to 1 exactly in exact arithmetic (Σ π_old·w·(A − b_w) = 0). Entries go negative for η > `max_interior_eta`,
    where (5.3) no longer solves the problem with π ≥ 0.
    """
    pi_old, adv = _check(pi_old, adv, eta, gamma, w_min)
    w = advantage_weight(adv, gamma, w_min)
    return pi_old * (1.0 + eta * w * (adv - weighted_baseline(pi_old, adv, w)))


def chi2_step(pi_old: Tensor, adv: Tensor, eta: float) -> Tensor:
    """The plain χ² (Fisher–Rao) step (5.4): π_a = π_old,a·(1 + η·(A_a − Σ_b π_old,b·A_b)), linear in A."""
    pi_old, adv = _check(pi_old, adv, eta)
    return pi_old * (1.0 + eta * (adv - (pi_old * adv).sum(-1, keepdim=True)))


def max_interior_eta(pi_old: Tensor, adv: Tensor, gamma: float = 0.0, *, w_min: float = 1e-3) -> float:
    """Largest η for which (5.3) keeps every π_a ≥ 0: min over actions with w·(A − b_w) < 0 of 1/(−w·(A − b_w))
    (inf when none). 1-d inputs."""
    pi_old, adv = _check(pi_old, adv, None, gamma, w_min)
    if pi_old.ndim != 1:
        raise ValueError("max_interior_eta takes one state: 1-d pi_old and adv")
    w = advantage_weight(adv, gamma, w_min)
    slope = w * (adv - weighted_baseline(pi_old, adv, w))
    neg = slope[slope < 0]
    return float((1.0 / (-neg)).min()) if neg.numel() else math.inf


def weighted_divergence(pi: Tensor, pi_old: Tensor, w: Tensor) -> Tensor:
    """D_w(π ‖ π_old) = ½·Σ_a (π_a − π_old,a)² / (π_old,a·w_a) of (5.2); w ≡ 1 is the χ² divergence."""
    return 0.5 * ((pi - pi_old) ** 2 / (pi_old * w)).sum(-1)


def trust_region_objective(pi: Tensor, pi_old: Tensor, adv: Tensor, eta: float, w: Tensor) -> Tensor:
    """⟨π, A⟩ − (1/η)·D_w(π ‖ π_old), the objective of (5.1)."""
    return (pi * adv).sum(-1) - weighted_divergence(pi, pi_old, w) / eta


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of a 1-d vector onto {x ≥ 0, Σx = 1} (sort-based; Duchi et al. 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, v.shape[0] + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - css / k > 0)[-1])
    return (v - css[rho] / (rho + 1)).clamp(min=0.0)


def _value_and_grad(f, x: Tensor) -> tuple[float, Tensor]:
    x = x.detach().requires_grad_(True)
    val = f(x)
    (g,) = torch.autograd.grad(val, x)
    return float(val.detach()), g.detach()


def _slsqp(f, x0: Tensor, nonnegative: bool, tol: float, max_iter: int) -> Tensor:
    import numpy as np
    from scipy.optimize import minimize

    def neg(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = _value_and_grad(f, torch.from_numpy(x))
        return -v, -g.numpy()

    res = minimize(
        neg, x0.numpy(), jac=True, method="SLSQP",
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)}],
        bounds=[(0.0, 1.0)] * x0.shape[0] if nonnegative else None,
        options={"ftol": tol, "maxiter": max_iter},
    )
    if not res.success:
        raise RuntimeError(f"SLSQP did not converge: {res.message}")
    return torch.from_numpy(res.x)


def _newton(f, x0: Tensor, tol: float, max_iter: int) -> Tensor:
    # Newton on the Lagrangian of max f(x) s.t. 1ᵀx = 1: solve [[H, 1], [1ᵀ, 0]]·[dx; λ] = [−g; 1 − 1ᵀx].
    x = x0.clone()
    k = x.shape[0]
    ones = torch.ones(k, 1, dtype=x.dtype)
    for _ in range(max_iter):
        _, g = _value_and_grad(f, x)
        h = torch.autograd.functional.hessian(f, x)
        kkt = torch.cat([torch.cat([h, ones], 1), torch.cat([ones.T, torch.zeros(1, 1, dtype=x.dtype)], 1)], 0)
        rhs = torch.cat([-g, (1.0 - x.sum()).reshape(1)])
        dx = torch.linalg.solve(kkt, rhs)[:k]
        x = x + dx
        if float(dx.abs().max()) <= tol:
            return x
    raise RuntimeError(f"Newton–KKT did not converge in {max_iter} iterations")


def _projected_gradient(f, x0: Tensor, nonnegative: bool, tol: float, max_iter: int) -> Tensor:
    # FISTA ascent (projection onto the simplex, or onto the hyperplane Σx = 1) with a step 1/L found by
    # backtracking on the curvature along the step, and O'Donoghue–Candès gradient restarts. Only gradients are
    # compared (not objective values), so the iteration keeps converging below the objective's rounding level.
    def proj(v: Tensor) -> Tensor:
        return project_simplex(v) if nonnegative else v - (v.sum() - 1.0) / v.shape[0]

    x = proj(x0.clone())
    y, t, lip = x.clone(), 1.0, 1.0
    for _ in range(max_iter):
        _, gy = _value_and_grad(f, y)
        while True:
            x_new = proj(y + gy / lip)
            d = x_new - y
            dd = float(d @ d)
            if dd == 0.0:
                break
            _, g_new = _value_and_grad(f, x_new)
            curvature = float(d @ (gy - g_new)) / dd  # −dᵀ∇²f d/‖d‖² for a quadratic f
            if curvature <= lip * (1.0 + 1e-9):
                break
            lip = max(2.0 * lip, curvature)
        step = float((x_new - x).abs().max())
        if float((y - x_new) @ (x_new - x)) > 0.0:  # momentum points against the gradient step: restart
            t_new, y = 1.0, x_new.clone()
        else:
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if step <= tol:
            return x
    raise RuntimeError(f"projected gradient did not converge in {max_iter} iterations")


def solve_trust_region(
    pi_old: Tensor,
    adv: Tensor,
    eta: float,
    gamma: float = 0.0,
    *,
    w_min: float = 1e-3,
    method: str = "auto",
    nonnegative: bool = True,
    tol: float | None = None,
    max_iter: int | None = None,
) -> Tensor:
    """Solve (5.1) for one state (1-d pi_old, adv) with a generic optimiser; returns π (float64).

    The optimisers see only the objective ⟨π, A⟩ − (1/η)·D_w (its gradient and Hessian by autograd) and the
    constraints, never (5.3). method: "slsqp" (SciPy), "newton" (equality-constrained Newton–KKT; the constraint
    π ≥ 0 is not imposed, and a result with a negative entry raises when nonnegative=True), "projected_gradient"
    (FISTA onto the simplex, or onto Σπ = 1 with nonnegative=False), "auto" = slsqp. nonnegative: impose π ≥ 0 (the true policy constraint); (5.3) agrees with the solution
    only where it is ≥ 0 itself.
    """
    if method not in SOLVER_METHODS:
        raise ValueError(f"method must be one of {SOLVER_METHODS}, got {method!r}")
    pi_old, adv = _check(pi_old, adv, eta, gamma, w_min)
    if pi_old.ndim != 1:
        raise ValueError("solve_trust_region takes one state: 1-d pi_old and adv")
    w = advantage_weight(adv, gamma, w_min)

    def f(pi: Tensor) -> Tensor:
        return trust_region_objective(pi, pi_old, adv, eta, w)

    if method in ("auto", "slsqp"):
        return _slsqp(f, pi_old, nonnegative, 1e-15 if tol is None else tol, max_iter or 1000)
    if method == "newton":
        pi = _newton(f, pi_old, 1e-13 if tol is None else tol, max_iter or 50)
        if nonnegative and bool((pi < 0).any()):
            raise ValueError("the equality-constrained optimum has a negative entry (π ≥ 0 is active); "
                             "use method='slsqp' or 'projected_gradient', or nonnegative=False")
        return pi
    return _projected_gradient(f, pi_old, nonnegative, 1e-13 if tol is None else tol, max_iter or 100_000)
