"""Load report definitions from YAML, every problem as ``file:line: field: message``.

Like rules, a broken definition never hides the good ones. The model is picked
by ``report:`` before validation, so pydantic's error paths are the paths as
written (no union tag in them) and map straight onto lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from audit_watch.config.model import problems_from_validation
from audit_watch.core.definition_files import document_entries, load_definitions
from audit_watch.core.yaml_source import InputError, LocatedDocument, Problem, interpolate_env
from audit_watch.reports.model import DEFINITION_MODELS, REPORT_NAMES, ReportDefinitionBase, default_definition


@dataclass(frozen=True)
class LoadedReport:
    definition: ReportDefinitionBase
    file: str
    line: int


def report_definitions(
    paths: Iterable[str | Path], channels: Mapping[str, Any] | None = None
) -> tuple[list[LoadedReport], list[Problem]]:
    """Every report definition under ``paths`` (files or folders, searched recursively).

    ``channels`` (the config's) lets unknown channel names be reported; without it
    they are not checked. Duplicate names are problems (the first one wins).
    """
    return load_definitions(
        paths, "reports", lambda doc: parse_report_document(doc, channels),
        lambda r: r.definition.name, lambda r: (r.file, r.line), "report",
    )


def parse_report_document(
    doc: LocatedDocument, channels: Mapping[str, Any] | None = None
) -> tuple[list[LoadedReport], list[Problem]]:
    problems = interpolate_env(doc)
    entries, shape_problems = document_entries(doc, "reports", "a report (a mapping with name and report)")
    problems += shape_problems
    context = {"channels": channels} if channels is not None else {}
    loaded: list[LoadedReport] = []
    for path, data in entries:
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
