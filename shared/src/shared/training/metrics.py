"""Metrics to ``metrics.jsonl`` (always), TensorBoard and W&B (optional, imported only when enabled).

One JSON object per line: ``{"step": 12, "reward_mean": 0.41, ...}``. Tensors, NumPy scalars and 1-element arrays become
numbers, larger ones lists; NaN/inf are written as Python's ``json`` writes them (``NaN``, ``Infinity``), which
:func:`read_metrics` reads back.

Resume: ``MetricsLogger(run_dir, resume_step=s)`` keeps the lines with ``step <= s`` and drops the rest (they were
logged after the checkpoint the run resumes from and will be logged again), then appends. Without ``resume_step`` the
file is started afresh. Log step s *before* saving the checkpoint of step s.

Only the main process should log: ``MetricsLogger(run_dir, enabled=accelerator.is_main_process)``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["METRICS_FILE", "MetricsLogger", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "detach"):  # torch.Tensor without importing torch
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays / scalars
        out = value.tolist()
        if isinstance(out, list) and len(out) == 1:
            return out[0]
        return out
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    raise TypeError(f"metric value of type {type(value).__name__} is not a number, string, tensor or array")


def _parse_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records and their raw lines; a final line without newline that does not parse (partial write) is dropped."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records, raw = [], []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no trailing newline: interrupted write
                break
            raise ValueError(f"{path}, line {i}: not valid JSON ({e.msg}). Fix: delete or repair that line.") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
        raw.append(line)
    return records, raw


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (or of ``<run_dir>/metrics.jsonl`` when given a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    return _parse_lines(path)[0]


class MetricsLogger:
    """Append scalar metrics to ``<run_dir>/metrics.jsonl`` and optionally TensorBoard / W&B.

    Args:
        run_dir: directory of the run (created).
        resume_step: when resuming from the checkpoint of this step, keep lines with ``step <= resume_step`` and
            append after them; None starts a new file (an existing one is replaced).
        tensorboard: also write TensorBoard event files under ``run_dir/tensorboard`` (extra ``shared[tensorboard]``).
        wandb: also log to Weights & Biases (extra ``shared[wandb]``); offline unless ``wandb_mode`` or the
            ``WANDB_MODE`` environment variable says otherwise, so it never needs network or an account by default.
        wandb_project, wandb_mode, wandb_kwargs: passed to ``wandb.init`` (with ``dir=run_dir``; on resume
            ``resume="allow"``: pass ``wandb_kwargs={"id": ...}`` to continue the same W&B run).
        config: a plain dict (``to_dict(cfg)``) recorded as the W&B run config.
        enabled: False makes every call a no-op (non-main processes).
    """

    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None, tensorboard: bool = False,
                 wandb: bool = False, wandb_project: str | None = None, wandb_mode: str | None = None,
                 wandb_kwargs: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.enabled = enabled
        self._tb = None
        self._wandb_run = None
        self._fh = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            records, raw = _parse_lines(self.path)
            keep = [line for rec, line in zip(records, raw, strict=True) if rec.get("step", -1) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
            os.replace(tmp, self.path)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        else:
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("TensorBoard logging needs the tensorboard package: install the extra "
                                  "`shared[tensorboard]` (e.g. `uv sync --extra tensorboard`) or set "
                                  "tensorboard=False") from e
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"),
                                     purge_step=None if resume_step is None else resume_step + 1)
        if wandb:
            try:
                import wandb as wandb_mod
            except ImportError as e:
                raise ImportError("W&B logging needs the wandb package: install the extra `shared[wandb]` "
                                  "(e.g. `uv sync --extra wandb`) or set wandb=False") from e
            kwargs = dict(wandb_kwargs or {})
            kwargs.setdefault("project", wandb_project)
            kwargs.setdefault("dir", str(self.run_dir))
            kwargs.setdefault("mode", wandb_mode or os.environ.get("WANDB_MODE") or "offline")
            if config is not None:
                kwargs.setdefault("config", dict(config))
            if resume_step is not None:
                kwargs.setdefault("resume", "allow")
            self._wandb_run = wandb_mod.init(**kwargs)

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, Any]:
        """Write one record ``{"step": step, **metrics}`` (flushed) and return it."""
        if not isinstance(step, int) or isinstance(step, bool):
            raise TypeError(f"step must be an int, got {step!r}")
        if "step" in metrics:
            raise ValueError("metrics must not contain 'step'; pass it as the step argument")
        record = {"step": step, **{str(k): _to_jsonable(v) for k, v in metrics.items()}}
        if not self.enabled:
            return record
        if self._fh is None:
            raise RuntimeError("MetricsLogger is closed")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
        if self._wandb_run is not None:
            self._wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=step)
        return record

    def close(self) -> None:
        """Flush and close all sinks (idempotent)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MeanTracker:
    """Means of repeatedly reported metrics (e.g. per micro-batch loss metrics over an iteration); keys named in
    ``minimum`` / ``maximum`` keep their extreme instead (``ratio_min``, ``ratio_max`` by default)."""

    def __init__(self, minimum: tuple[str, ...] = ("ratio_min",), maximum: tuple[str, ...] = ("ratio_max",)) -> None:
        self.minimum, self.maximum = set(minimum), set(maximum)
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.extremes: dict[str, float] = {}

    def add(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            if k in self.minimum:
                self.extremes[k] = min(self.extremes.get(k, math.inf), v)
            elif k in self.maximum:
                self.extremes[k] = max(self.extremes.get(k, -math.inf), v)
            else:
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1

    def result(self) -> dict[str, float]:
        return {**{k: self.sums[k] / self.counts[k] for k in self.sums}, **self.extremes}
