"""``audit-watch check``: every problem in config, rules and templates at once.

Nothing here stops at the first problem: a broken config still lets the rules
be checked (without channel names), and each rule file is checked on its own.
Schedules are checked by building the triggers the daemon would build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from audit_watch.channels.render import BUNDLED_TEMPLATES, check_templates
from audit_watch.config.model import Config, read_config
from audit_watch.core.yaml_source import Problem
from audit_watch.daemon.runtime import build_triggers
from audit_watch.reports import report_definitions
from audit_watch.rules.loader import load_rules
from audit_watch.store.source import AuditSource


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    rules: int = 0
    templates: int = 0
    channels: int = 0
    reports: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def run_check(config_path: str | None, source_url: str | None = None, connect: bool = False) -> CheckReport:
    report = CheckReport()
    config, problems = read_config(config_path)
    report.problems.extend(problems)
    base = config or Config()
    context = {"channels": base.channels} if config is not None else {}
    rule_set = load_rules(base.rule_paths, context)
    report.problems.extend(rule_set.problems)
    report.rules = len(rule_set.rules)
    report.channels = len(base.channels)
    definitions, report_problems = report_definitions(base.report_paths, base.channels if config is not None else None)
    report.problems.extend(report_problems)
    report.reports = len(definitions)
    # What the daemon would schedule, built the way it builds it.
    report.problems.extend(build_triggers(rule_set.rules, definitions, base.timezone)[2])
    template_dirs = [*base.template_paths, BUNDLED_TEMPLATES]
    report.templates, template_problems = check_template_dirs(template_dirs)
    report.problems.extend(template_problems)
    if connect and config is not None:
        report.problems.extend(check_source_tables(config, source_url))
    # Files in order, and within a file by line: the order an editor walks them.
    report.problems.sort(key=lambda p: (p.file, p.line))
    return report


def check_template_dirs(folders: list[Path]) -> tuple[int, list[Problem]]:
    """Compile every alert template (syntax, unknown filters and variables) with
    the renderer's own environments, so check sees what delivery will see."""
    count = sum(1 for folder in folders if folder.is_dir() for _ in (folder / "alerts").rglob("*.j2"))
    problems = [Problem(p.file, p.line, "template", p.message) for p in check_templates(folders, include_bundled=False)]
    return count, problems


def check_source_tables(config: Config, source_url: str | None) -> list[Problem]:
    """With --connect: the audit store has the (renamed) tables and columns rules read."""
    where = config.file or "audit-watch.yaml"
    src = AuditSource.from_config(config.source, source_url)
    problems = []
    try:
        inspector = inspect(src.engine)
        for logical, table in src.tables.items():
            if not inspector.has_table(table.name, schema=table.schema):
                problems.append(Problem(where, 0, f"source.tables.{logical}", f"table {table.name!r} not found"))
                continue
            present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
            for column in table.columns:
                if column.name not in present:
                    problems.append(Problem(where, 0, f"source.columns.{logical}.{column.key}",
                                            f"column {column.name!r} not found in {table.name}"))
    except SQLAlchemyError as exc:
        problems.append(Problem(where, 0, "source.url", f"cannot connect: {type(exc).__name__}"))
    finally:
        src.engine.dispose()
    return problems
