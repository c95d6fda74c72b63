"""Small PNG charts for the reports, drawn with matplotlib's Agg backend.

We build ``Figure`` objects directly (no pyplot): no global state, nothing that
needs a display, safe in the daemon's threads. The PNGs are deterministic for the
same data (no timestamp or version in their metadata), so golden tests can
compare them and the outbox can deduplicate them.

Labels come from the audit store (agent names): matplotlib would read ``$...$``
in them as mathtext, so dollars are escaped and control characters dropped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH_INCHES, DPI = 6.0, 100          # 600 px: the usual width of an e-mail body
JOBS_COLOR, FAILED_COLOR = "#8aa9d6", "#c8102e"
INPUT_COLOR, OUTPUT_COLOR = "#3d6fb6", "#f0a43a"
SERIES_COLORS = ("#3d6fb6", "#c8102e", "#2a9d8f", "#f0a43a", "#7b5ea7", "#6c757d")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_label(text: Any, limit: int = 28) -> str:
    """A chart label from untrusted text: one line, no mathtext, not too long."""
    value = _CONTROL.sub(" ", str(text)).strip()
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("\\", "\\\\").replace("$", r"\$")


def _figure(height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_INCHES, height), dpi=DPI)
    fig.set_facecolor("white")
    return fig


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" entry: the same data gives the same bytes on every run.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def _thin_ticks(labels: Sequence[str], most: int = 12) -> list[str]:
    step = max(1, -(-len(labels) // most))
    return [label if i % step == 0 else "" for i, label in enumerate(labels)]


def compact(value: float) -> str:
    """1234 -> 1.2K, 2500000 -> 2.5M (axis labels)."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.0f}"


def daily_jobs_png(labels: Sequence[str], jobs: Sequence[int], failed: Sequence[int]) -> bytes:
    """Jobs per bucket as bars, failed jobs as a line on their own axis (they are a few %)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = _figure(2.3)
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    ax.bar(positions, list(jobs), color=JOBS_COLOR, width=0.7, label="jobs")
    ax.set_xticks(positions, _thin_ticks([safe_label(x) for x in labels]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    ax.set_ylabel("jobs", fontsize=8)
    _style(ax)
    right = ax.twinx()
    right.plot(positions, list(failed), color=FAILED_COLOR, marker="o", markersize=3, linewidth=1.5, label="failed")
    right.set_ylim(bottom=0, top=max(1, max(failed, default=0)) * 1.15)
    right.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    right.tick_params(labelsize=8, colors=FAILED_COLOR)
    right.set_ylabel("failed", fontsize=8, color=FAILED_COLOR)
    right.spines["top"].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, ["jobs", "failed"], fontsize=7, loc="upper left", frameon=False, ncols=2)
    fig.tight_layout(pad=0.6)
    return _png(fig)


def tokens_by_agent_png(names: Sequence[str], input_tokens: Sequence[int], output_tokens: Sequence[int]) -> bytes:
    """Horizontal stacked bars, the biggest consumer on top."""
    from matplotlib.ticker import FuncFormatter

    count = max(1, len(names))
    fig = _figure(0.5 + 0.28 * count)
    ax = fig.add_subplot()
    rows = list(range(count))[::-1]
    ax.barh(rows, list(input_tokens), color=INPUT_COLOR, height=0.6, label="input")
    ax.barh(rows, list(output_tokens), left=list(input_tokens), color=OUTPUT_COLOR, height=0.6, label="output")
    ax.set_yticks(rows, [safe_label(n) for n in names])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    _style(ax)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.legend(fontsize=7, loc="lower right", frameon=False, ncols=2)
    fig.tight_layout(pad=0.6)
    return _png(fig)


def daily_series_png(labels: Sequence[str], series: Mapping[str, Sequence[int]], ylabel: str) -> bytes:
    """One line per series (a few agents' tokens per day)."""
    from matplotlib.ticker import FuncFormatter

    fig = _figure(2.3)
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    for index, (name, values) in enumerate(series.items()):
        ax.plot(positions, list(values), color=SERIES_COLORS[index % len(SERIES_COLORS)], marker="o",
                markersize=2.5, linewidth=1.4, label=safe_label(name, 22))
    ax.set_xticks(positions, _thin_ticks([safe_label(x) for x in labels]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_ylim(bottom=0)
    _style(ax)
    if series:
        # Above the plot: inside it, the legend hides the lines it explains.
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False,
                  ncols=min(3, len(series)))
    fig.tight_layout(pad=0.6)
    return _png(fig)
