"""Find and load rule files: one rule per file, or a list under ``rules:``.

A broken rule never stops the others: every good rule is returned together with
the problems of the bad ones, each as ``file:line: field: message``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from audit_watch.config.model import problems_from_validation
from audit_watch.core.definition_files import document_entries, load_definitions, yaml_files
from audit_watch.core.yaml_source import InputError, LocatedDocument, Problem, interpolate_env
from audit_watch.rules.model import Rule, RuleBase

RULE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Rule)


@dataclass(frozen=True)
class LoadedRule:
    rule: RuleBase
    file: str
    line: int


@dataclass
class RuleSet:
    rules: list[LoadedRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_name(self, name: str) -> RuleBase | None:
        return next((r.rule for r in self.rules if r.rule.name == name), None)


def parse_rule_document(
    doc: LocatedDocument, context: Mapping[str, Any] | None = None
) -> tuple[list[LoadedRule], list[Problem]]:
    """Validate the rules of one parsed file."""
    problems = interpolate_env(doc)
    entries, shape_problems = document_entries(doc, "rules", "a rule (a mapping with name and kind)")
    problems += shape_problems
    loaded: list[LoadedRule] = []
    for path, data in entries:
        try:
            rule = RULE_ADAPTER.validate_python(data, context=dict(context or {}))
        except ValidationError as exc:
            problems.extend(problems_from_validation(doc, exc, path))
            continue
        loaded.append(LoadedRule(rule, doc.file, doc.line_of(path)))
    return loaded, problems


def load_rules(paths: Iterable[str | Path], context: Mapping[str, Any] | None = None) -> RuleSet:
    """Load every rule file under ``paths``; duplicate names are problems (the first wins)."""
    rules, problems = load_definitions(
        paths, "rules", lambda doc: parse_rule_document(doc, context),
        lambda r: r.rule.name, lambda r: (r.file, r.line), "rule",
    )
    return RuleSet(rules, problems)


def load_rule_file(path: str | Path, context: Mapping[str, Any] | None = None) -> list[RuleBase]:
    """Load one file for test-rule/backtest; any problem is fatal here (InputError)."""
    result = load_rules([path], context)
    if result.problems:
        raise InputError(result.problems)
    return [item.rule for item in result.rules]


def rule_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """The rule files under ``paths`` (what a reload watches)."""
    return yaml_files(paths, "rules")
