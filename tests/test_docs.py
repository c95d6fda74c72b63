"""The user documentation stands on its own and says what the code does.

- every link in README.md and docs/ points at a file of the repository (or a heading);
- docs/audit-store.md lists exactly the tables and columns the code declares, in the
  same order, and the indexes the generator creates.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audit_watch.store.schema import REFERENCE_COLUMNS, REFERENCE_INDEXES

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_points_inside_the_project(page: Path) -> None:
    text = page.read_text()
    assert "shared/" not in text
    for target in LINK.findall(text):
        if target.startswith("#"):
            continue
        assert "://" not in target, f"{page.name}: {target} leaves the project"
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: {target} does not exist"


def _documented_columns(text: str) -> dict[str, list[str]]:
    """{table: [column, ...]} from the `### `table`` sections' first table column."""
    tables: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"### `(\w+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), [])
        elif line.startswith("## "):
            current = None
        elif current is not None:
            cell = re.match(r"\| `(\w+)` \|", line)
            if cell:
                current.append(cell.group(1))
    return tables


def test_the_data_contract_lists_the_declared_tables_and_columns() -> None:
    text = (ROOT / "docs" / "audit-store.md").read_text()
    declared = {table: [name for name, _, _ in columns] for table, columns in REFERENCE_COLUMNS.items()}
    assert _documented_columns(text) == declared


def test_the_data_contract_lists_the_indexes_the_generator_creates() -> None:
    text = (ROOT / "docs" / "audit-store.md").read_text()
    documented = re.findall(r"CREATE INDEX ON (\w+) \(([\w, ]+)\);", text)
    expected = [(table, ", ".join(columns)) for table, indexes in REFERENCE_INDEXES.items() for columns in indexes]
    assert documented == expected
