"""Writing one section of a results file, keeping the others."""

from __future__ import annotations

import os
import time
from pathlib import Path


def replace_section(path: Path, title: str, body: list[str]) -> None:
    """Put ``## title`` with ``body`` into ``path``: in place of a section with the
    same title, else at the end. Everything else in the file stays."""
    text = path.read_text() if path.exists() else ""
    head, *sections = text.split("\n## ")
    section = "\n".join([title, "", *body]).rstrip("\n") + "\n"
    for index, existing in enumerate(sections):
        if existing.split("\n", 1)[0].strip() == title:
            sections[index] = section
            break
    else:
        sections.append(section)
    path.write_text("\n## ".join([head.rstrip("\n") + "\n", *(s.rstrip("\n") + "\n" for s in sections)]))


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def settle(max_load: float, wait: float) -> float:
    """Wait up to ``wait`` seconds for the 1-minute load average to fall to ``max_load``
    (other work on a small machine skews the figures); returns the load then."""
    started = time.monotonic()
    while os.getloadavg()[0] > max_load and time.monotonic() - started < wait:
        print(f"  load average {os.getloadavg()[0]:.2f} > {max_load:g}, waiting ...", flush=True)
        time.sleep(15)
    return os.getloadavg()[0]
