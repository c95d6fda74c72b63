"""What one type of channel knows, and what every type is handed.

A :class:`ChannelType` is everything audit-watch knows about one ``type:`` of the
config's ``channels:``: its config model, how its sender is built, how an alert
notification and a report become its payload, whether it threads and whether a
resolution also updates the message that announced the firing. The registry
(:mod:`audit_watch.channels.registry`) lists the types; nothing else tells them apart.

A report reaches a channel type as :class:`ReportContent`: the reports stage
builds it, so channels never import reports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, get_args

from pydantic import BaseModel, ConfigDict

from audit_watch.channels.base import Channel
from audit_watch.channels.messages import MessageContext
from audit_watch.channels.render import Renderer


class ChannelSettings(BaseModel):
    """The base of every channel's config model: strict, frozen, discriminated by ``type``.

    A type's model narrows ``type`` to its name: ``type: Literal["webhook"]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    type: str


@dataclass(frozen=True)
class ReportContent:
    """A rendered report as a channel receives it."""

    name: str                                   # the definition's name ("weekly-digest")
    title: str
    period: str                                 # the period in words
    text: str
    html: str                                   # standalone: charts as data: URIs
    email_html: str                             # charts as cid: references to the inline attachments
    slack: str                                  # mrkdwn, escaped by the templates
    attachments: tuple[Mapping[str, Any], ...]  # {"filename", "content_type", "cid", "data" (base64)}
    evidence: Mapping[str, Any] | None          # the evidence CSV among the attachments, when there is one
    about: Mapping[str, Any]                    # every payload's "report": name, kind, period, scope


ConfigT = TypeVar("ConfigT", bound=ChannelSettings)


class ChannelType(ABC, Generic[ConfigT]):
    """One type of channel. Subclass it with the type's config model as ``ConfigT``."""

    config_model: ClassVar[type[ChannelSettings]]
    threads: ClassVar[bool] = False        # repeats and resolutions go under the firing message
    updates_root: ClassVar[bool] = False   # a resolution also re-renders the firing message (root_update)

    @property
    def name(self) -> str:
        """The ``type:`` value, read from the model's ``Literal``."""
        (name,) = get_args(self.config_model.model_fields["type"].annotation)
        return str(name)

    @abstractmethod
    def sender(self, name: str, config: ConfigT, base_dir: Path | None, **options: Any) -> Channel:
        """The sender of channel ``name``; ``options`` come from tests (an SSL context, a timeout)."""

    @abstractmethod
    def alert_payload(self, config: ConfigT, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        """What the outbox stores for one alert notification (plain JSON)."""

    @abstractmethod
    def report_payload(self, config: ConfigT, report: ReportContent) -> dict[str, Any]:
        """What the outbox stores for one report (plain JSON)."""

    def root_update(self, config: ConfigT, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        """The firing message re-rendered (``message.event`` is ``update``); only when ``updates_root``."""
        raise NotImplementedError(f"channel type {self.name!r} does not update its messages")
