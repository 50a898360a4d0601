"""Rules of the suite itself: an unexpected skip fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(test_file: Path, **env: str) -> int:
    """A pytest run of one file with this suite's conftest loaded as a plugin."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(test_file)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
    ).returncode


def test_an_unexpected_skip_fails_the_run_unless_a_person_allowed_it(tmp_path: Path) -> None:
    skipping = tmp_path / "test_skipping.py"
    skipping.write_text("import pytest\n\n\ndef test_it():\n    pytest.skip('no tmpfs here')\n")
    passing = tmp_path / "test_passing.py"
    passing.write_text("def test_it():\n    assert True\n")
    assert run_pytest(skipping, AXIS_RELAY_ALLOW_SKIPS="") == 1
    assert run_pytest(skipping, AXIS_RELAY_ALLOW_SKIPS="1") == 0
    assert run_pytest(passing, AXIS_RELAY_ALLOW_SKIPS="") == 0
