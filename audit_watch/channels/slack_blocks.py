"""Block Kit messages within Slack's limits, built with ``slack_sdk.models.blocks``.

Limits: 50 blocks a message, 3,000 characters a section text, 150 a header, 10
context elements, 3,000 a button URL. Whatever does not fit ends in "and N more",
cut at a line (or at least outside a ``<link>`` or an ``&entity;``) so the cut
never breaks escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import ButtonElement, ContextBlock, HeaderBlock, SectionBlock
from slack_sdk.models.blocks.basic_components import MarkdownTextObject

from audit_watch.channels.escaping import safe_url

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150
MAX_CONTEXT = 10
MAX_URL = 3000
BUTTON_LABEL = "Open in Audit Logs"


@dataclass
class Section:
    mrkdwn: str
    button_url: str | None = None


def truncate_plain(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def truncate_mrkdwn(text: str, limit: int = MAX_TEXT) -> str:
    """Keep whole lines while they fit, then say how many lines were left out."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        suffix = f"\n_…and {len(lines) - index} more lines_"
        if size + len(line) + 1 + len(suffix) > limit:
            if not kept:
                return _cut_safely(line, limit - 1) + "…"
            return "\n".join(kept) + suffix
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)  # pragma: no cover - the length test above returns first


def _cut_safely(text: str, limit: int) -> str:
    """Cut at ``limit`` but never inside ``<...>`` or ``&...;``."""
    cut = text[:limit]
    for opener, closer in (("<", ">"), ("&", ";")):
        start = cut.rfind(opener)
        if start != -1 and closer not in cut[start:]:
            cut = cut[:start]
    return cut


def build_message(
    header: str, intro: str | None, sections: list[Section], context: list[str], text: str,
    more_label: str = "alerts",
) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}`` as plain JSON (what the outbox stores)."""
    blocks: list[Any] = [HeaderBlock(text=truncate_plain(header, MAX_HEADER))]
    if intro:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate_mrkdwn(intro))))
    tail = 1 if context else 0
    room = MAX_BLOCKS - len(blocks) - tail
    shown = sections if len(sections) <= room else sections[: room - 1]
    for index, section in enumerate(shown):
        blocks.append(_section(section, index))
    hidden = len(sections) - len(shown)
    if hidden:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"_…and {hidden} more {more_label}_")))
    if context:
        elements = [MarkdownTextObject(text=truncate_mrkdwn(c)) for c in context[:MAX_CONTEXT]]
        blocks.append(ContextBlock(elements=elements))
    return {"text": truncate_mrkdwn(text), "blocks": [b.to_dict() for b in blocks]}


def _section(section: Section, index: int) -> SectionBlock:
    text = MarkdownTextObject(text=truncate_mrkdwn(section.mrkdwn or " "))
    url = safe_url(section.button_url)
    if url and len(url) <= MAX_URL:
        button = ButtonElement(text=BUTTON_LABEL, url=url, action_id=f"open-audit-logs-{index}")
        return SectionBlock(text=text, accessory=button)
    return SectionBlock(text=text)
