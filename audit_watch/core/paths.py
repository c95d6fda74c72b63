"""Where the bundled rules, reports and templates live: beside the package."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
BUNDLED_TEMPLATES = REPO_ROOT / "templates"
