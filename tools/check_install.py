"""Check that each workspace package installs alone into a fresh virtual environment.

For ``shared`` and every ``packages/<name>``: create a new venv with uv, ``uv pip install`` the
package folder (which must pull in ``shared`` from this workspace through its own metadata),
then import it in that venv. Prints a table and exits non-zero if any package fails::

    uv run python tools/check_install.py            # every package
    uv run python tools/check_install.py shared     # just one

Installs come from uv's cache after the first ``uv sync``, so each takes seconds, not a download.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def members() -> dict[str, Path]:
    """Import name → folder for ``shared`` and every ``packages/*`` with a pyproject.toml."""
    out = {"shared": ROOT / "shared"}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        out[pyproject.parent.name] = pyproject.parent
    return out


def check(name: str, folder: Path, uv: list[str]) -> tuple[bool, float, str]:
    """Install ``folder`` alone into a fresh venv and import ``name`` there."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"install-{name}-") as tmp:
        venv = Path(tmp) / "venv"
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
        steps = [
            [*uv, "venv", "--quiet", "--python", f"{sys.version_info.major}.{sys.version_info.minor}", str(venv)],
            # Only the package folder is named: `shared` must come in through the package's own
            # metadata ([tool.uv.sources] shared = { workspace = true }).
            [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(folder)],
            [str(venv / "bin" / "python"), "-c", f"import {name}; print({name}.__name__)"],
        ]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
            if r.returncode != 0:
                return False, time.time() - t0, (r.stderr or r.stdout).strip().splitlines()[-1][:200]
    return True, time.time() - t0, "ok"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="package import names (default: all)")
    args = p.parse_args(argv)
    found = members()
    unknown = [n for n in args.names if n not in found]
    if unknown:
        p.error(f"unknown package(s) {unknown}; known: {sorted(found)}")
    uv = [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]
    failed = 0
    print(f"{'package':<14} {'result':<6} {'seconds':>8}  detail")
    for name in args.names or list(found):
        ok, secs, detail = check(name, found[name], uv)
        failed += not ok
        print(f"{name:<14} {'ok' if ok else 'FAIL':<6} {secs:8.1f}  {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
