"""The documentation describes the product as it is: generated benchmark tables, no development history."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs").glob("*.rst")) + [ROOT / "README.md"]


def test_benchmark_tables_are_generated_from_the_results_files():
    tables = importlib.import_module("examples.benchmarks.tables")
    assert tables.main([str(ROOT / "docs" / "results"), "--check"]) == 0


def test_every_results_file_has_its_table_included_or_listed():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    included = set(re.findall(r"\{include\} (results/[\w./-]+\.md)", text))
    for md in included:
        assert (ROOT / "docs" / md).exists(), md


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.name)
def test_user_docs_carry_no_development_history(path):
    text = path.read_text()
    for pattern in (r"issue #", r"\bsession\s*\d", r"\bsessions?\b", r"\bround\s*\d", r"missed by"):
        assert not re.search(pattern, text, flags=re.IGNORECASE), f"{path.name}: {pattern!r}"
