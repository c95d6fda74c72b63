"""Load report definitions from YAML, every problem as ``file:line: field: message``.

Like rules, a broken definition never hides the good ones. The model is picked
by ``report:`` before validation, so pydantic's error paths are the paths as
written (no union tag in them) and map straight onto lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from audit_watch.config import problems_from_validation
from audit_watch.reports.model import DEFINITION_MODELS, REPORT_NAMES, ReportDefinitionBase, default_definition
from audit_watch.yaml_source import InputError, LocatedDocument, Problem, interpolate_env, load_yaml

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedReport:
    definition: ReportDefinitionBase
    file: str
    line: int


@dataclass
class ReportSet:
    reports: list[LoadedReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_name(self, name: str) -> ReportDefinitionBase | None:
        return next((r.definition for r in self.reports if r.definition.name == name), None)


def report_definitions(
    paths: Iterable[str | Path], channels: Mapping[str, Any] | None = None
) -> tuple[list[LoadedReport], list[Problem]]:
    """Every report definition under ``paths`` (files or folders, searched recursively).

    ``channels`` (the config's) lets unknown channel names be reported; without it
    they are not checked. Duplicate names are problems (the first one wins).
    """
    result = ReportSet()
    seen: dict[str, LoadedReport] = {}
    for file in _files(paths, result.problems):
        try:
            doc = load_yaml(file)
        except InputError as exc:
            result.problems.extend(exc.problems)
            continue
        loaded, problems = parse_report_document(doc, channels)
        result.problems.extend(problems)
        for item in loaded:
            first = seen.get(item.definition.name)
            if first is not None:
                result.problems.append(Problem(
                    item.file, item.line, "name",
                    f"duplicate report name {item.definition.name!r} (first defined at {first.file}:{first.line})"))
                continue
            seen[item.definition.name] = item
            result.reports.append(item)
    return result.reports, result.problems


def _files(paths: Iterable[str | Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, "reports", "no such file or folder"))
    return files


def parse_report_document(
    doc: LocatedDocument, channels: Mapping[str, Any] | None = None
) -> tuple[list[LoadedReport], list[Problem]]:
    problems = interpolate_env(doc)
    if doc.data is None:
        return [], [doc.problem((), "empty file: expected a report (a mapping with name and report)")]
    if not isinstance(doc.data, dict):
        return [], [doc.problem((), "expected a report (a mapping with name and report), or a list under 'reports:'")]
    if "reports" in doc.data:
        extra = sorted(set(doc.data) - {"reports"})
        if extra:
            problems.append(doc.problem((extra[0],), "unknown key beside 'reports:' (put it inside a report)"))
        items = doc.data["reports"]
        if not isinstance(items, list):
            return [], problems + [doc.problem(("reports",), "expected a list of reports")]
        entries: list[tuple[tuple[str | int, ...], Any]] = [(("reports", i), item) for i, item in enumerate(items)]
    else:
        entries = [((), doc.data)]
    context = {"channels": channels} if channels is not None else {}
    loaded: list[LoadedReport] = []
    for path, data in entries:
        if not isinstance(data, dict):
            problems.append(doc.problem(path, "expected a report (a mapping with name and report)"))
            continue
        kind = data.get("report")
        model = DEFINITION_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            message = ("required key is missing" if kind is None
                       else f"unknown report {kind!r} (reports: {', '.join(REPORT_NAMES)})")
            problems.append(doc.problem(path + ("report",), message))
            continue
        try:
            definition = model.model_validate(data, context=context)
        except ValidationError as exc:
            problems.extend(problems_from_validation(doc, exc, path))
            continue
        loaded.append(LoadedReport(definition, doc.file, doc.line_of(path)))
    return loaded, problems


def find_report(name: str, loaded: Iterable[LoadedReport] = ()) -> ReportDefinitionBase:
    """A definition by name, else a built-in report with its defaults.

    Raises InputError naming what exists when there is neither.
    """
    loaded = list(loaded)
    for item in loaded:
        if item.definition.name == name:
            return item.definition
    if name in REPORT_NAMES:
        return default_definition(name)
    defined = sorted(item.definition.name for item in loaded)
    known = ", ".join([*REPORT_NAMES, *defined])
    raise InputError([Problem("NAME", 0, "", f"no report named {name!r} (reports: {known})")])
