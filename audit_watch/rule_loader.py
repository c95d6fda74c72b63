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

from audit_watch.config import problems_from_validation
from audit_watch.rule_model import Rule, RuleBase
from audit_watch.yaml_source import InputError, LocatedDocument, Problem, interpolate_env, load_yaml

RULE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Rule)
RULE_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")


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


def rule_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand files and folders (recursively) into rule files; rule tests are skipped."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.name.endswith(RULE_SUFFIXES) and not p.name.endswith(TEST_SUFFIXES)
            )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, "rules", "no such file or folder"))
    return files, problems


def parse_rule_document(
    doc: LocatedDocument, context: Mapping[str, Any] | None = None
) -> tuple[list[LoadedRule], list[Problem]]:
    """Validate the rules of one parsed file."""
    problems = interpolate_env(doc)
    if doc.data is None:
        return [], [doc.problem((), "empty file: expected a rule (a mapping with name and kind)")]
    if isinstance(doc.data, list):
        return [], [doc.problem((), "a rule file holds one rule (a mapping) or a list under 'rules:', not a bare list")]
    if not isinstance(doc.data, dict):
        return [], [doc.problem((), "expected a rule (a mapping with name and kind)")]
    if "rules" in doc.data:
        extra = sorted(set(doc.data) - {"rules"})
        if extra:
            problems.append(doc.problem((extra[0],), "unknown key beside 'rules:' (put it inside a rule)"))
        items = doc.data["rules"]
        if not isinstance(items, list):
            return [], problems + [doc.problem(("rules",), "expected a list of rules")]
        entries = [(("rules", i), item) for i, item in enumerate(items)]
    else:
        entries = [((), doc.data)]
    loaded: list[LoadedRule] = []
    for path, data in entries:
        if not isinstance(data, dict):
            problems.append(doc.problem(path, "expected a rule (a mapping with name and kind)"))
            continue
        try:
            rule = RULE_ADAPTER.validate_python(data, context=dict(context or {}))
        except ValidationError as exc:
            problems.extend(problems_from_validation(doc, exc, path))
            continue
        loaded.append(LoadedRule(rule, doc.file, doc.line_of(path)))
    return loaded, problems


def load_rules(paths: Iterable[str | Path], context: Mapping[str, Any] | None = None) -> RuleSet:
    """Load every rule file under ``paths``; duplicate names are problems (the first wins)."""
    files, problems = rule_files(paths)
    result = RuleSet(problems=problems)
    seen: dict[str, LoadedRule] = {}
    for file in files:
        try:
            doc = load_yaml(file)
        except InputError as exc:
            result.problems.extend(exc.problems)
            continue
        loaded, file_problems = parse_rule_document(doc, context)
        result.problems.extend(file_problems)
        for item in loaded:
            first = seen.get(item.rule.name)
            if first is not None:
                result.problems.append(
                    Problem(item.file, item.line, "name",
                            f"duplicate rule name {item.rule.name!r} (first defined at {first.file}:{first.line})")
                )
                continue
            seen[item.rule.name] = item
            result.rules.append(item)
    return result


def load_rule_file(path: str | Path, context: Mapping[str, Any] | None = None) -> list[RuleBase]:
    """Load one file for test-rule/backtest; any problem is fatal here (InputError)."""
    result = load_rules([path], context)
    if result.problems:
        raise InputError(result.problems)
    return [item.rule for item in result.rules]
