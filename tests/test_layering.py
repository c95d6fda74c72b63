"""The package keeps its layout: stages import only the stages below them, and no
module imports itself round a circle.

The import graph is grimp's (the library import-linter builds on): every ``import``
statement counts, at module level, inside functions and under ``TYPE_CHECKING``.

1. no circle between the modules of ``audit_watch``;
2. import-linter's contract (``[tool.importlinter]`` in pyproject.toml, what
   ``make lint`` runs) holds, and names every stage package;
3. both checks bite: in a copy of the package, a planted circle and a planted upward
   import make them fail.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "audit_watch"


def import_circles(graph: Any) -> list[tuple[str, ...]]:
    """Each circle of imports once, as (a, b, ..., a): for every direct import a -> b,
    the shortest way from b back to a."""
    circles: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                circle = (importer, *back)
                circles.setdefault(frozenset(circle), circle)
    return sorted(circles.values())


def circles_of(package_root: Path) -> list[tuple[str, ...]]:
    """The circles of the package under ``package_root``, in a fresh interpreter (this
    one has imported the real package, which would shadow a copy)."""
    code = (
        "import sys, grimp, test_layering; "
        f"print(repr(test_layering.import_circles(grimp.build_graph({PACKAGE!r}, cache_dir=None))))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=package_root, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    circles: list[tuple[str, ...]] = ast.literal_eval(done.stdout)
    return circles


def lint_imports_in(package_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contract, on the package under ``package_root``."""
    shutil.copy(ROOT / "pyproject.toml", package_root / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], env=env,
                          cwd=package_root, capture_output=True, text=True, timeout=60)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


# --- the package as it is ---------------------------------------------------------------------


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    assert len(graph.modules) > 50       # the whole package, not an empty graph
    assert import_circles(graph) == []


def test_the_layers_contract_holds_and_names_every_stage() -> None:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    stages = {m for m in graph.find_children(PACKAGE) if graph.find_children(m)}   # the subpackages
    assert stages == set(_layers()), "a stage package missing from [tool.importlinter] is not checked"
    # In a fresh interpreter: import-linter configures logging (dictConfig), which would
    # disable every logger this one has already created for the tests that follow.
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


# --- the checks bite ----------------------------------------------------------------------------


def test_a_planted_circle_is_found(package_copy: Path) -> None:
    core = package_copy / PACKAGE / "core"
    # One side at module level under TYPE_CHECKING, the other inside a function:
    # neither hides a circle.
    (core / "planted_a.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from audit_watch.core import planted_b\n"
    )
    (core / "planted_b.py").write_text("def late() -> None:\n    from audit_watch.core import planted_a  # noqa\n")
    circles = circles_of(package_copy)
    assert circles == [("audit_watch.core.planted_a", "audit_watch.core.planted_b", "audit_watch.core.planted_a")]


def test_a_planted_upward_import_fails_the_contract(package_copy: Path) -> None:
    assert lint_imports_in(package_copy).returncode == 0     # the copy passes as it is
    # A new module of the lowest stage that reaches up to the command line (nothing
    # imports it, so there is no circle: the contract alone must catch it).
    (package_copy / PACKAGE / "core" / "planted_upward.py").write_text(
        "def late() -> None:\n    from audit_watch.cli import main  # noqa\n"
    )
    assert circles_of(package_copy) == []
    done = lint_imports_in(package_copy)
    assert done.returncode == 1, done.stdout
    assert "audit_watch.core.planted_upward -> audit_watch.cli.main" in done.stdout
