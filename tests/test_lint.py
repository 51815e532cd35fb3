"""ruff's lint and format checks (configured in pyproject.toml) pass on the whole repository, as
``.ci/run`` requires; here too, so the README's test command catches them first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


pytestmark = pytest.mark.skipif(
    shutil.which("ruff") is None and _ruff("--version").returncode != 0, reason="ruff is not installed (.[test])"
)


def test_ruff_check_passes():
    done = _ruff("check", "--output-format", "concise", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_check_passes():
    done = _ruff("format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_ruff():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "ruff check" in ci and "ruff format --check" in ci
