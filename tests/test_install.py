"""Every workspace package installs alone into a fresh venv (tools/check_install.py)."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_install", ROOT / "tools" / "check_install.py")
check_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_install)

UV = [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]


def test_members_include_shared_and_every_package():
    found = check_install.members()
    assert "shared" in found
    for pyproject in (ROOT / "packages").glob("*/pyproject.toml"):
        assert pyproject.parent.name in found


@pytest.mark.parametrize("name", sorted(check_install.members()))
def test_package_installs_alone(name):
    ok, seconds, detail = check_install.check(name, check_install.members()[name], UV)
    assert ok, f"{name} failed to install alone: {detail}"
