"""What rule files and report definitions share: finding the YAML files, the
"one item, or a list under a key" file shape, and unique names.

Each loader keeps its own model; these helpers keep the behaviour (and the
messages) of the two file kinds the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from audit_watch.core.yaml_source import InputError, LocatedDocument, Path_, Problem, load_yaml

YAML_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")

Item = TypeVar("Item")


def yaml_files(paths: Iterable[str | Path], key: str) -> tuple[list[Path], list[Problem]]:
    """Files and folders (searched recursively) -> YAML files; rule tests are skipped.
    ``key`` names the config key in the problem for a path that does not exist."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.name.endswith(YAML_SUFFIXES) and not p.name.endswith(TEST_SUFFIXES)
            ))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, key, "no such file or folder"))
    return files, problems


def document_entries(doc: LocatedDocument, list_key: str, noun: str) -> tuple[list[tuple[Path_, Any]], list[Problem]]:
    """The items of one file: the file itself, or each item of the list under ``list_key``.

    ``noun`` words the messages: "a rule (a mapping with name and kind)".
    """
    if doc.data is None:
        return [], [doc.problem((), f"empty file: expected {noun}")]
    if isinstance(doc.data, list):
        return [], [doc.problem((), f"a file holds {noun}, or a list under '{list_key}:', not a bare list")]
    if not isinstance(doc.data, dict):
        return [], [doc.problem((), f"expected {noun}")]
    if list_key not in doc.data:
        return [((), doc.data)], []
    problems = []
    extra = sorted(set(doc.data) - {list_key})
    if extra:
        problems.append(doc.problem((extra[0],), f"unknown key beside '{list_key}:' (put it inside an item)"))
    items = doc.data[list_key]
    if not isinstance(items, list):
        return [], problems + [doc.problem((list_key,), f"expected a list under '{list_key}:'")]
    entries: list[tuple[Path_, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            entries.append(((list_key, index), item))
        else:
            problems.append(doc.problem((list_key, index), f"expected {noun}"))
    return entries, problems


def unique_by_name(
    items: Iterable[Item], name: Callable[[Item], str], where: Callable[[Item], tuple[str, int]], what: str
) -> tuple[list[Item], list[Problem]]:
    """Keep the first item of each name; later ones are problems that point at the first."""
    kept: list[Item] = []
    problems: list[Problem] = []
    first: dict[str, Item] = {}
    for item in items:
        key = name(item)
        if key in first:
            file, line = where(item)
            first_file, first_line = where(first[key])
            problems.append(Problem(file, line, "name",
                                    f"duplicate {what} name {key!r} (first defined at {first_file}:{first_line})"))
            continue
        first[key] = item
        kept.append(item)
    return kept, problems


def load_definitions(
    paths: Iterable[str | Path],
    key: str,
    parse: Callable[[LocatedDocument], tuple[list[Item], list[Problem]]],
    name: Callable[[Item], str],
    where: Callable[[Item], tuple[str, int]],
    what: str,
) -> tuple[list[Item], list[Problem]]:
    """Every item of every file under ``paths``: the good ones, and every problem
    (a broken file or item never hides the others; duplicate names keep the first)."""
    files, problems = yaml_files(paths, key)
    loaded: list[Item] = []
    for file in files:
        try:
            doc = load_yaml(file)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        items, file_problems = parse(doc)
        loaded.extend(items)
        problems.extend(file_problems)
    kept, duplicates = unique_by_name(loaded, name, where, what)
    return kept, problems + duplicates
