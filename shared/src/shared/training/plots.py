"""Sample grids (PIL) and metric curves (matplotlib, Agg; no display, no pyplot global state).

``save_image_grid`` and ``to_pil_images`` live in :mod:`shared.imaging` (grid geometry documented there) and are
re-exported here.

Curves: one panel per key against ``step``; ``std_keys={"reward_mean": "reward_std"}`` shades mean ± std; ``smooth``
= s ∈ [0, 1) draws the debiased exponential moving average y_t = EMA_t / (1 − s^t), EMA_t = s·EMA_{t−1} + (1 − s)·x_t
(as TensorBoard's slider) over the faint raw curve. The PNG is ``figsize · dpi`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.imaging import save_image_grid, to_pil_images

__all__ = ["plot_curves", "save_image_grid", "to_pil_images"]


# --------------------------------------------------------------------------------------------------------------------
# curves


def _ema(values: np.ndarray, s: float) -> np.ndarray:
    out = np.empty_like(values)
    acc = 0.0
    for t, v in enumerate(values, start=1):
        acc = s * acc + (1.0 - s) * v
        out[t - 1] = acc / (1.0 - s ** t)
    return out


def plot_curves(metrics: str | Path | Sequence[Mapping[str, Any]], keys: Sequence[str] | str, path: str | Path, *,
                std_keys: Mapping[str, str] | None = None, smooth: float = 0.0, x_key: str = "step",
                title: str | None = None, figsize: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """Plot ``keys`` from a ``metrics.jsonl`` (path or run dir) or a list of records into a PNG; return its path.

    Records lacking a key, or with a non-finite value, are skipped for that key. ``figsize`` defaults to
    (6.4, 2.4 per key) inches; the PNG is exactly ``figsize · dpi`` pixels.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    from shared.training.metrics import read_metrics

    records = read_metrics(metrics) if isinstance(metrics, str | Path) else list(metrics)
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("plot_curves needs at least one key")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    std_keys = dict(std_keys or {})
    available = sorted({k for r in records for k in r})
    for k in keys + list(std_keys.values()):
        if not any(k in r for r in records):
            raise ValueError(f"metric {k!r} not found in any record; available: {', '.join(available) or 'none'}")

    fig = Figure(figsize=figsize or (6.4, 2.4 * len(keys)), dpi=dpi)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        pts = [(r.get(x_key, i), r[key], r.get(std_keys.get(key, ""), None)) for i, r in enumerate(records)
               if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        x = np.array([p[0] for p in pts], dtype=float)
        y = np.array([p[1] for p in pts], dtype=float)
        sparse = len(y) < 10  # e.g. an evaluation every n steps: drawn as points, never smoothed
        if smooth > 0 and not sparse:
            ax.plot(x, y, color="C0", alpha=0.25, linewidth=1)
            y = _ema(y, smooth)
        ax.plot(x, y, color="C0", linewidth=1.5, label=key, marker="o" if sparse else None)
        if key in std_keys:
            sd = np.array([p[2] if isinstance(p[2], int | float) else np.nan for p in pts], dtype=float)
            if smooth > 0 and not sparse:
                sd = _ema(np.nan_to_num(sd), smooth)
            ax.fill_between(x, y - sd, y + sd, color="C0", alpha=0.2, label=f"± {std_keys[key]}")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if key in std_keys:
            ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel(x_key)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
