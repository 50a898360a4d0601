"""The claims table: every guarantee in docs/design.md names the tests that check it,
and those tests exist. A guarantee written without a test fails here."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SECTION = "## What it guarantees, and how that is tested"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def guarantees(text: str) -> dict[str, str]:
    """Each `### ` guarantee of the section, with its text."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = {}
    for block in section.split("\n### ")[1:]:
        title, _, body = block.partition("\n")
        found[title.strip()] = body
    return found


@cache
def defined_tests(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def problems(text: str) -> list[str]:
    """What is wrong with the table: a guarantee naming no test, or a test that is not there."""
    found = []
    for title, body in guarantees(text).items():
        checked_by = [line for line in body.splitlines() if line.startswith("Checked by:")]
        references = REFERENCE.findall(checked_by[0]) if checked_by else []
        if not references:
            found.append(f"{title!r} names no test (add a 'Checked by:' line)")
        for file, name in references:
            path = ROOT / file
            if not path.is_file() or name not in defined_tests(path):
                found.append(f"{title!r}: no test {file}::{name}")
    return found


def test_every_guarantee_names_tests_that_exist() -> None:
    text = DESIGN.read_text()
    assert len(guarantees(text)) >= 10, sorted(guarantees(text))
    assert problems(text) == []


def test_a_guarantee_without_a_test_or_with_a_missing_one_is_caught() -> None:
    this = "`tests/test_claims.py::test_every_guarantee_names_tests_that_exist`"
    text = (
        f"{SECTION}\n\n### Checked\nText.\nChecked by: {this}\n\n### Unchecked\nText only.\n\n"
        "### Gone\nChecked by: `tests/test_claims.py::test_that_was_renamed`\n\n## Next section\n"
    )
    assert problems(text) == [
        "'Unchecked' names no test (add a 'Checked by:' line)",
        "'Gone': no test tests/test_claims.py::test_that_was_renamed",
    ]
