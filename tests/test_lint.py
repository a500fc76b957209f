"""The package and its tests pass ruff with the rules of pyproject.toml ([tool.ruff]: pycodestyle errors and
warnings, pyflakes, import order), so an unused import or a name that does not exist fails here, not in review."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed: pip install -e '.[dev]'")
def test_ruff_finds_nothing():
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "transfer_cache", "tests"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ruff found problems ({' '.join(command[1:])}):\n{done.stdout}{done.stderr}"
