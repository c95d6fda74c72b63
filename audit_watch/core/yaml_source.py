"""YAML with line numbers, so every error can say ``file:line: field: message``.

We compose the node tree (which keeps marks), construct the plain data from it,
and keep a map from each path (``("rules", 0, "where", "status")``) to the line
where it is written. An error about a missing key points at its nearest parent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audit_watch.core.secrets import remember_environment_value

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input, formatted the way editors understand."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        # One line, always: a key or value written with a control or line-breaking
        # character (\x1c, U+2028, ...) is shown escaped.
        return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


class InputError(Exception):
    """Bad configuration, rules or templates: carries every problem found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class LocatedDocument:
    """Parsed YAML plus the line of every path in it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int:
        """The line of ``path``, or of its nearest written parent."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def problem(self, path: Iterable[str | int], message: str) -> Problem:
        path = tuple(path)
        return Problem(self.file, self.line_of(path), dotted(path), message)

    def sub(self, prefix: Path_) -> LocatedDocument:
        """The part under ``prefix`` as a document of its own (same file and lines)."""
        n = len(prefix)
        data = self.data
        for part in prefix:
            data = data[part]
        lines = {p[n:]: line for p, line in self.lines.items() if p[:n] == prefix}
        return LocatedDocument(self.file, data, lines)


def dotted(path: Iterable[str | int]) -> str:
    """``rules[0].where.status``; a key that is empty, starts or ends with a space or
    holds a character that does not print is quoted (``channels.' x'``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not text or text != text.strip() or not text.isprintable():
                text = repr(text)
            out += ("." if out else "") + text
    return out


def load_yaml(path: str | Path, text: str | None = None) -> LocatedDocument:
    """Read one YAML file; a syntax error becomes an InputError with its line."""
    name = str(path)
    if text is None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise InputError([Problem(name, 0, "", f"cannot read: {exc.strerror or exc}")]) from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise InputError([Problem(name, line, "", f"not UTF-8 text (byte {raw[exc.start]:#04x}, "
                                                      f"position {exc.start + 1}): save the file as UTF-8")]) from exc
    loader: _Loader | None = None
    try:
        loader = _Loader(text)          # its reader refuses control characters at once
        node = loader.get_single_node()
        if node is None:
            return LocatedDocument(name, None, {(): 1})
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        if not isinstance(exc, _Refused):
            message = f"YAML syntax error: {message}"
        raise InputError([Problem(name, line, "", message)]) from exc
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise InputError([Problem(name, line, "", f"the character {character} is not allowed in YAML "
                                                  "(a control character?)")]) from exc
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise InputError([Problem(name, 1, "", f"YAML error: {first[0] if first else type(exc).__name__}")]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Path_, int] = {}
    budget = [MAX_VALUES]
    try:
        _record_lines(node, (), lines, budget)
    except _TooLarge as exc:
        raise InputError([Problem(name, exc.line, "", exc.message)]) from exc
    return LocatedDocument(name, data, lines)


MAX_DEPTH = 40              # nesting levels of a file; configs and rules use fewer than 10
MAX_VALUES = 200_000        # values a file expands to (its aliases expanded)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds: no nesting deeper than MAX_DEPTH (its composer
    recurses: a few thousand ``[`` exhaust Python's stack), and a value that cannot
    be built (``2026-13-45`` as a date) is a problem at its line, not an exception."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise _Refused(None, None, f"cannot read this value: {exc}", node.start_mark) from exc


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that audit-watch does not read (too deep, a value that cannot be built)."""


class _TooLarge(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def _record_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge(node.start_mark.line + 1, f"more than {MAX_VALUES} values (YAML aliases repeating a part?): "
                                                  "split it")
    if len(path) > MAX_DEPTH:    # only an alias inside itself gets here (the composer stops plain nesting)
        raise _TooLarge(node.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep (a YAML alias "
                                                  "inside itself?)")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = path + (key,)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), lines, budget)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate_env(doc: LocatedDocument, environ: dict[str, str] | None = None) -> list[Problem]:
    """Replace ``${NAME}`` in string values (after parsing, so a value cannot inject YAML).

    Returns a problem per missing variable; the value of a variable is never shown,
    and every value substituted is scrubbed from logs and errors from now on.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def substitute(value: Any, path: Path_) -> Any:
        if isinstance(value, str):
            def repl(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in env:
                    problems.append(doc.problem(path, f"environment variable ${{{name}}} is not set"))
                    return ""
                remember_environment_value(env[name])
                return env[name]

            return _ENV_REF.sub(repl, value)
        if isinstance(value, dict):
            return {k: substitute(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v, path + (i,)) for i, v in enumerate(value)]
        return value

    doc.data = substitute(doc.data, ())
    return problems
