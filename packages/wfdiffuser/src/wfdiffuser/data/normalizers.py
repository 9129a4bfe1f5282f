"""Per-dimension normalisers fitted on an (N, d) array (card §3; Diffuser/DD ``normalization.py``).

* ``gaussian``: z = (x − μ)/σ (Diffuser's ``GaussianNormalizer``).
* ``limits``:   z = 2(x − min)/(max − min) − 1 ∈ [−1, 1] (Diffuser's ``LimitsNormalizer``).
* ``cdf``:      z = 2·F̂(clip(x, min, max)) − 1 with F̂ the empirical CDF, F̂(q_j) = #{x ≤ q_j}/N at the sorted unique
                values q_j, linear in between; the inverse interpolates back (DD's ``CDFNormalizer``).

Ours, where the public code has no guard: a constant dimension maps to 0 and back to its value (Gaussian/limits
would divide by zero; DD's CDF passes it through un-normalised); the CDF keeps at most ``max_knots`` (q_j, F̂_j)
pairs per dimension (evenly spaced in rank, both ends kept) so checkpoints stay small on 10^6-step datasets.
Affine normalisers do not clip; the CDF one clips to the fitted range both ways.

``normalize``/``unnormalize`` take numpy arrays or torch tensors with any leading dims and the fitted d last, and
return the same type (torch: same dtype/device, differentiable).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "NORMALIZERS",
    "CDFNormalizer",
    "GaussianNormalizer",
    "LimitsNormalizer",
    "Normalizer",
    "build_normalizer",
    "normalizer_from_state",
]

NORMALIZERS = ("gaussian", "limits", "cdf")


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _fit_array(x) -> np.ndarray:
    arr = x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"normaliser data must be a non-empty (N, d) array, got shape {arr.shape}; "
                         "flatten the leading dims to (N, d) first")
    if not np.isfinite(arr).all():
        raise ValueError("normaliser data contains NaN or inf; drop those rows first")
    return arr


class Normalizer:
    """Common API. Subclasses implement ``_forward``/``_backward`` on a float array whose last dim is ``dim``."""

    kind: str = ""
    dim: int

    @classmethod
    def fit(cls, x, **kwargs) -> Normalizer:
        raise NotImplementedError

    def _check(self, x) -> None:
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"{type(self).__name__} was fitted on {self.dim} dims, got input of shape "
                             f"{tuple(x.shape)}; the last axis must have {self.dim} entries")

    def normalize(self, x):
        self._check(x)
        if _is_torch(x):
            return self._forward_torch(x if x.is_floating_point() else x.float())
        arr = np.asarray(x)
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
        return self._forward_np(arr.astype(np.float64)).astype(dtype)

    def unnormalize(self, x):
        self._check(x)
        if _is_torch(x):
            return self._backward_torch(x if x.is_floating_point() else x.float())
        arr = np.asarray(x)
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
        return self._backward_np(arr.astype(np.float64)).astype(dtype)

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


class _Affine(Normalizer):
    """z = (x − shift)/scale per dimension; scale 1 where the data are constant (so those map to 0)."""

    def __init__(self, shift, scale) -> None:
        self.shift = np.asarray(shift, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if self.shift.shape != self.scale.shape or not (self.scale > 0).all():
            raise ValueError("shift and scale must have the same length and scale must be positive")
        self.dim = len(self.shift)

    def _forward_np(self, x):
        return (x - self.shift) / self.scale

    def _backward_np(self, z):
        return z * self.scale + self.shift

    def _params(self, x):
        import torch

        return (torch.as_tensor(self.shift, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.scale, dtype=x.dtype, device=x.device))

    def _forward_torch(self, x):
        shift, scale = self._params(x)
        return (x - shift) / scale

    def _backward_torch(self, z):
        shift, scale = self._params(z)
        return z * scale + shift

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}


class GaussianNormalizer(_Affine):
    """z = (x − μ)/σ with the population std σ (σ := 1 for constant dims)."""

    kind = "gaussian"

    @classmethod
    def fit(cls, x) -> GaussianNormalizer:
        arr = _fit_array(x)
        std = arr.std(axis=0)
        return cls(arr.mean(axis=0), np.where(std > 0, std, 1.0))


class LimitsNormalizer(_Affine):
    """z = 2(x − min)/(max − min) − 1, i.e. shift (max + min)/2, scale (max − min)/2 (1 for constant dims)."""

    kind = "limits"

    @classmethod
    def fit(cls, x) -> LimitsNormalizer:
        arr = _fit_array(x)
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        half = (hi - lo) / 2.0
        return cls((hi + lo) / 2.0, np.where(half > 0, half, 1.0))


def _interp_torch(x, xp, fp):
    """Piecewise-linear interpolation of (xp, fp) at x (xp strictly increasing, x already inside [xp0, xp−1])."""
    import torch

    idx = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


class CDFNormalizer(Normalizer):
    """DD's empirical-CDF normaliser to [−1, 1] (see module docstring); knots (q_j, F̂_j) per dimension."""

    kind = "cdf"

    def __init__(self, quantiles: list, cumprob: list) -> None:
        self.quantiles = [np.asarray(q, dtype=np.float64).reshape(-1) for q in quantiles]
        self.cumprob = [np.asarray(p, dtype=np.float64).reshape(-1) for p in cumprob]
        if len(self.quantiles) != len(self.cumprob) or not self.quantiles:
            raise ValueError("quantiles and cumprob must be non-empty lists with one entry per dimension")
        for q, p in zip(self.quantiles, self.cumprob):
            if q.shape != p.shape or len(q) == 0:
                raise ValueError("each dimension needs as many quantiles as cumulative probabilities (>= 1)")
            if len(q) > 1 and (np.any(np.diff(q) <= 0) or np.any(np.diff(p) <= 0)):
                raise ValueError("CDF knots must be strictly increasing in both quantile and probability")
        self.constant = [len(q) == 1 for q in self.quantiles]
        self.dim = len(self.quantiles)

    @classmethod
    def fit(cls, x, max_knots: int | None = 4096) -> CDFNormalizer:
        """Empirical CDF per dim: unique sorted values q_j and F̂_j = cumsum(counts)/N (DD's ``empirical_cdf``)."""
        arr = _fit_array(x)
        if max_knots is not None and max_knots < 2:
            raise ValueError(f"max_knots must be >= 2 or None, got {max_knots}")
        quantiles, cumprob = [], []
        for col in arr.T:
            q, counts = np.unique(col, return_counts=True)
            p = np.cumsum(counts, dtype=np.float64) / col.size
            if max_knots is not None and len(q) > max_knots:
                keep = np.unique(np.round(np.linspace(0, len(q) - 1, max_knots)).astype(np.int64))
                q, p = q[keep], p[keep]
            quantiles.append(q)
            cumprob.append(p)
        return cls(quantiles, cumprob)

    def _forward_np(self, x):
        out = np.empty_like(x)
        for d, (q, p) in enumerate(zip(self.quantiles, self.cumprob)):
            out[..., d] = 0.0 if len(q) == 1 else 2.0 * np.interp(np.clip(x[..., d], q[0], q[-1]), q, p) - 1.0
        return out

    def _backward_np(self, z):
        out = np.empty_like(z)
        for d, (q, p) in enumerate(zip(self.quantiles, self.cumprob)):
            out[..., d] = q[0] if len(q) == 1 else np.interp(np.clip((z[..., d] + 1.0) / 2.0, p[0], p[-1]), p, q)
        return out

    def _columns(self, x, fn):
        import torch

        cols = []
        for d, (q, p) in enumerate(zip(self.quantiles, self.cumprob)):
            tq = torch.as_tensor(q, dtype=x.dtype, device=x.device)
            tp = torch.as_tensor(p, dtype=x.dtype, device=x.device)
            cols.append(fn(x[..., d], tq, tp))
        return torch.stack(cols, dim=-1)

    def _forward_torch(self, x):
        import torch

        def col(v, q, p):
            if len(q) == 1:
                return torch.zeros_like(v)
            return 2.0 * _interp_torch(v.clamp(q[0], q[-1]), q, p) - 1.0

        return self._columns(x, col)

    def _backward_torch(self, z):
        import torch

        def col(v, q, p):
            if len(q) == 1:
                return torch.full_like(v, float(q[0]))
            return _interp_torch(((v + 1.0) / 2.0).clamp(p[0], p[-1]), p, q)

        return self._columns(z, col)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "quantiles": [q.tolist() for q in self.quantiles],
                "cumprob": [p.tolist() for p in self.cumprob]}


_CLASSES: dict[str, type[Normalizer]] = {
    "gaussian": GaussianNormalizer,
    "limits": LimitsNormalizer,
    "cdf": CDFNormalizer,
}


def build_normalizer(kind: str, x, **kwargs) -> Normalizer:
    """Fit the normaliser named ``kind`` (one of ``NORMALIZERS``) on an (N, d) array."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown normaliser {kind!r}; choose one of {NORMALIZERS}")
    return _CLASSES[kind].fit(x, **kwargs)


def _plain(v):
    return v.detach().cpu().tolist() if _is_torch(v) else np.asarray(v).tolist() if isinstance(v, np.ndarray) else v


def normalizer_from_state(state: dict[str, Any]) -> Normalizer:
    """Inverse of ``Normalizer.state_dict()`` (values may be lists, numpy arrays or tensors)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in _CLASSES:
        raise ValueError(f"normaliser state has kind {kind!r}; expected one of {NORMALIZERS}")
    if kind == "cdf":
        return CDFNormalizer([_plain(q) for q in state["quantiles"]], [_plain(p) for p in state["cumprob"]])
    return _CLASSES[kind](_plain(state["shift"]), _plain(state["scale"]))
