"""ruff (lint and format) over the project and mypy over the ground floor, serving/,
training/ and the roof's adstack/ (with what it imports)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint_and_format():
    lint = run("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout
    fmt = run("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_on_ground_serving_training_and_the_cli():
    result = run("mypy", "core", "artifact", "serving", "training", "adstack")
    assert result.returncode == 0, result.stdout
