"""What the vqrae repro scripts share: run `vqrae train` jobs in parallel (one torch thread each) and summarise.

Each job is exactly the console command a user runs, with config overrides; its log goes beside its run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from arms import mean_std  # noqa: F401  (re-exported for codebook_dim.py and distill.py)

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["run.progress=false", "run.threads=1"]


def train(run_dir: Path, sets: list[str], *, resume: bool = True) -> dict:
    """``vqrae train --set run.dir=RUN --set ...``; returns its eval.json (skips a finished run when resuming)."""
    done = run_dir / "eval.json"
    if resume and done.is_file():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [a for s in [f"run.dir={run_dir}", *QUIET, *sets] for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tic = time.time()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "vqrae", "train", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True, cwd=ROOT)
    print(f"{run_dir.relative_to(run_dir.parents[1])}: {time.time() - tic:.0f} s", flush=True)
    return json.loads(done.read_text())


def parallel(jobs: list, fn, n_jobs: int) -> list:
    """``fn(job)`` for every job, ``n_jobs`` at a time, results in job order."""
    with ThreadPoolExecutor(n_jobs) as pool:
        return list(pool.map(fn, jobs))


def fmt(values: list[float], digits: int = 2, pct: bool = False) -> str:
    m, s = mean_std([v * 100 for v in values] if pct else values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (" %" if pct else "")
