"""`make` on a machine with too old a Python: it stops first and names the fix, and a
.venv an older interpreter left behind is made again, not half-used. A fake interpreter
plays Python 3.10; make runs in a scratch directory, so this checkout's .venv is safe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PYTHON_310 = """#!/bin/sh
# Python 3.10 as make sees it: its version, and 'too old' for any check it is asked.
if [ "$1" = "--version" ]; then echo "Python 3.10.12"; exit 0; fi
echo 0
"""


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This Makefile run in ``cwd``, with what its rules name linked in beside it."""
    for name in ("Makefile", "requirements", "pyproject.toml"):
        if not (cwd / name).exists():
            (cwd / name).symlink_to(ROOT / name)
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fake_python(directory: Path) -> Path:
    path = directory / "python3.10"
    path.write_text(PYTHON_310)
    path.chmod(0o755)
    return path


def test_make_run_on_python_3_10_stops_with_the_fix(tmp_path: Path) -> None:
    result = make(tmp_path, f"PYTHON={fake_python(tmp_path)}", "run")
    assert result.returncode != 0
    assert "axis-relay needs Python 3.11 or later" in result.stderr
    assert "is Python 3.10.12" in result.stderr
    assert "make PYTHON=python3.11" in result.stderr
    assert not (tmp_path / ".venv").exists()  # nothing half-made


def test_a_venv_an_older_python_left_is_made_again(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake_python(tmp_path / ".venv" / "bin").rename(tmp_path / ".venv" / "bin" / "python")
    result = make(tmp_path, f"PYTHON={sys.executable}", "python-check")
    assert result.returncode == 0, result.stderr
    assert "was made by an older or missing Python: making it again" in result.stdout
    assert not (tmp_path / ".venv").exists()
    # A good one is left alone.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    again = make(tmp_path, f"PYTHON={sys.executable}", "python-check")
    assert again.returncode == 0, again.stderr
    assert "making it again" not in again.stdout
    assert (tmp_path / ".venv" / "bin" / "python").exists()
