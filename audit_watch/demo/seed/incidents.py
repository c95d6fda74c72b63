"""The incidents planted in the demo data, at fixed offsets before ``end``.

Two views of the same facts:

* :func:`planted_incidents` says what each bundled rule should report: the rule,
  the alert group, and the span of hourly evaluation times at which it fires
  (``first_fire`` .. ``last_fire``, both inclusive). Evaluated every hour on
  the hour (steps aligned with ``end``), the rule fires for that group at every
  step of the span and at no other step, with ``alerts`` alerts for it each
  time; nothing else fires in the generated data (at scales 0.25 to 1, seeds
  alike) once the rule has its full history inside the data.
* :func:`build_plan` tells the generator what to change in the background
  (a failing agent, a stopped cron, a silent webhook, a token overrun) and which
  extra rows to add (the sensitive actions, the new login IP, the 429 burst).

All offsets count back from ``end`` (a whole hour when the default is used).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from audit_watch.core.cron import CronSchedule
from audit_watch.demo.seed.rows import TimeText, epoch, event_row
from audit_watch.demo.seed.world import (
    AGENTS,
    NEW_IP,
    PROMOTED_USER,
    SENSITIVE_ACTOR,
    Agent,
    World,
    build_world,
)

HOUR = 3600

# -- the fixed offsets (seconds before end) ---------------------------------
SPIKE_AGENT = "triage"
SPIKE_FROM, SPIKE_TO = 55 * 60, 5 * 60   # failures in [end-55m, end-5m): firing at end
SPIKE_EXTRA = 48                      # retried calls on top of the agent's own jobs
SPIKE_ERROR = "Provider over quota: openai returned 429 insufficient_quota"

STOPPED_CRON = "nightly"
CRON_STOP = 2 * 24 * HOUR             # runs expected at or after end-2d never fire
CRON_GRACE = 15 * 60

TOKEN_AGENT = "kbsync"
TOKEN_FROM = 3 * 24 * HOUR            # input tokens x4.4 from end-3d
TOKEN_INPUT_FACTOR = 4.3955           # -> total tokens per job x4.2
TOKEN_OVERRUN_FACTOR = 2              # token_overrun.yaml's baseline factor
TOKEN_BUDGET = 2_000_000              # token-budget's threshold (rules/token_budget.yaml)
TOKEN_BUDGET_SCALES = (0.2, 0.3)      # where only the planted agent crosses it

ACTOR_LOGIN = 41 * 60                 # new IP, then the sensitive actions, all in (end-1h, end]
SENSITIVE_AT = (30 * 60, 24 * 60, 18 * 60, 12 * 60, 9 * 60)
UPDATED_AGENTS = ("triage", "intake", "refunds")

BURST_PROVIDER = "anthropic"
BURST_FROM, BURST_COUNT = 12 * 60, 36   # 36 x 429 in [end-12m, end-2m]
BURST_SPAN = 10 * 60

WEBHOOK_AGENT = "intake"
WEBHOOK_STOP = 24 * HOUR              # no webhook thread active at or after end-1d
WEBHOOK_WINDOW = 6 * HOUR


@dataclass(frozen=True)
class PlantedIncident:
    rule: str                         # bundled rule name
    group: dict[str, str]             # the alert's group: group_by values (+ the new value)
    first_fire: datetime              # first hourly evaluation that fires (inclusive)
    last_fire: datetime               # last one (inclusive)
    description: str
    started_at: datetime              # when its rows begin
    alerts: int = 1                   # alerts for the group per firing step (kind any: rows)


@dataclass
class Plan:
    """What the generator changes in the background, in Unix seconds."""

    fail_window: dict[str, tuple[int, int, str, int]] = field(default_factory=dict)
    token_boost: dict[str, tuple[int, float]] = field(default_factory=dict)
    source_stop: dict[tuple[str, str], int] = field(default_factory=dict)
    cron_stop: dict[str, int] = field(default_factory=dict)


def _utc(end: datetime) -> datetime:
    if end.tzinfo is None:
        raise ValueError("end must be an aware datetime")
    return end.astimezone(UTC)


def _ceil_hour(value: datetime) -> datetime:
    floor = value.replace(minute=0, second=0, microsecond=0)
    return floor if floor == value else floor + timedelta(hours=1)


def first_missed_run(world: World, end: datetime) -> datetime:
    """The stopped cron's first expected run at or after end - 2d (in its own zone)."""
    cron = world.crons[STOPPED_CRON]
    run = CronSchedule.read(cron.schedule, cron.timezone).next_at_or_after(end - timedelta(seconds=CRON_STOP))
    assert run is not None   # the demo's crons fire daily or more often
    return run


def _token_agent() -> Agent:
    return next(a for a in AGENTS if a.key == TOKEN_AGENT)


def _crossing_hour(target: float) -> float:
    """Hours into the overrun at which the agent's rolling day of tokens reaches
    ``target`` x its normal day (its rate is flat around the clock)."""
    spec = _token_agent()
    per_job = spec.input_tokens + spec.output_tokens
    growth = (spec.input_tokens * TOKEN_INPUT_FACTOR + spec.output_tokens) / per_job
    return 24 * (target - 1) / (growth - 1)


def token_budget_first_hour(scale: float) -> int | None:
    """Hours into the overrun at which token-budget first fires, or None where
    the fixed threshold does not single out the planted agent (outside
    TOKEN_BUDGET_SCALES) or its crossing falls too close to a whole hour."""
    if not TOKEN_BUDGET_SCALES[0] <= scale <= TOKEN_BUDGET_SCALES[1]:
        return None
    spec = _token_agent()
    jobs_per_day = 24 * round(spec.jobs_per_hour * scale * 1000) / 1000
    crossing = _crossing_hour(TOKEN_BUDGET / (jobs_per_day * (spec.input_tokens
                                                              + spec.output_tokens)))
    if not 0.2 <= crossing % 1 <= 0.8:
        return None
    return math.ceil(crossing)


def planted_incidents(end: datetime, *, seed: int = 42,
                      scale: float = 1.0) -> list[PlantedIncident]:
    """What the bundled rules should report on data seeded with (seed, scale, end).

    token-budget has a fixed threshold calibrated for the demo scale 0.25: it is
    listed only for scales in TOKEN_BUDGET_SCALES (outside them the background
    crosses it, or the planted agent does not).
    """
    end = _utc(end)
    world = build_world(seed)
    agent = {key: a.id for key, a in world.agents.items()}
    h = timedelta(hours=1)
    spike_hour = end
    missed = first_missed_run(world, end)
    token_start = end - timedelta(seconds=TOKEN_FROM)
    actor = world.users[SENSITIVE_ACTOR]
    spike_group = {"agent_id": agent[SPIKE_AGENT]}
    result = [
        PlantedIncident("failed-job-spike", spike_group, spike_hour, spike_hour,
                        "Support Triage fails every call for 50 minutes: provider over quota",
                        end - timedelta(seconds=SPIKE_FROM)),
        PlantedIncident("job-error-rate", dict(spike_group), spike_hour, spike_hour,
                        "Most of Support Triage's jobs in that hour failed (provider over quota)",
                        end - timedelta(seconds=SPIKE_FROM)),
        PlantedIncident("cron-not-firing", {"cron_id": world.crons[STOPPED_CRON].id},
                        _ceil_hour(missed + timedelta(seconds=CRON_GRACE)), end,
                        "The 'Nightly finance report' cron (02:00 UTC) stopped firing 2 days ago",
                        missed),
        PlantedIncident("token-overrun", {"agent_id": agent[TOKEN_AGENT]},
                        token_start + math.ceil(_crossing_hour(TOKEN_OVERRUN_FACTOR)) * h, end,
                        "Knowledge Base Sync loops over a large context file: ~4x input tokens per "
                        "job for 3 days", token_start),
        PlantedIncident("sensitive-actions", {"user_id": actor.id}, end, end,
                        f"{actor.name} promoted a member to owner, rotated the OpenAI credential "
                        "and edited three agents", end - timedelta(seconds=SENSITIVE_AT[0]),
                        alerts=len(SENSITIVE_AT)),
        PlantedIncident("new-login-ip", {"user_id": actor.id, "metadata.ip": NEW_IP},
                        end, end,
                        f"{actor.name} signed in from {NEW_IP}, never seen before, just before "
                        "the sensitive actions", end - timedelta(seconds=ACTOR_LOGIN)),
        PlantedIncident("provider-error-burst", {"metadata.provider": BURST_PROVIDER},
                        end, end,
                        f"{BURST_COUNT} rate-limit errors (429) from {BURST_PROVIDER} "
                        "in 10 minutes",
                        end - timedelta(seconds=BURST_FROM)),
        PlantedIncident("webhook-silent", {"agent_id": agent[WEBHOOK_AGENT]},
                        end - timedelta(seconds=WEBHOOK_STOP - WEBHOOK_WINDOW), end,
                        "Ticket Intake's webhook threads stopped a day ago",
                        end - timedelta(seconds=WEBHOOK_STOP)),
    ]
    budget_hour = token_budget_first_hour(scale)
    if budget_hour is not None:
        result.insert(4, PlantedIncident(
            "token-budget", {"agent_id": agent[TOKEN_AGENT]}, token_start + budget_hour * h, end,
            f"Knowledge Base Sync went over the {TOKEN_BUDGET:,} tokens/day budget", token_start))
    return result


def build_plan(world: World, end: datetime, scale: float) -> Plan:
    e = epoch(_utc(end))
    magnitude = max(1, round(scale))
    return Plan(
        fail_window={SPIKE_AGENT: (e - SPIKE_FROM, e - SPIKE_TO, SPIKE_ERROR,
                                   SPIKE_EXTRA * magnitude)},
        token_boost={TOKEN_AGENT: (e - TOKEN_FROM, TOKEN_INPUT_FACTOR)},
        source_stop={(WEBHOOK_AGENT, "webhook"): e - WEBHOOK_STOP},
        cron_stop={STOPPED_CRON: epoch(first_missed_run(world, _utc(end)))},
    )


def planted_events(world: World, end: datetime, make_id: Callable[[int], str],
                   fmt: TimeText, start: int) -> list[tuple]:
    """The extra events rows: the actor's new-IP login and sensitive actions, the 429 burst."""
    e = epoch(_utc(end))
    actor, promoted = world.users[SENSITIVE_ACTOR], world.users[PROMOTED_USER]
    team = world.teams[actor.teams[0]].id
    # (offset, type, severity, description, metadata, agent id, user id, team id)
    items: list[tuple[int, str, str, str, dict[str, Any], str | None, str | None, str]] = [
        (e - ACTOR_LOGIN, "auth.login", "info", f"{actor.name} signed in", {"ip": NEW_IP}, None, actor.id, team),
    ]
    role_at, cred_at, *edit_at = SENSITIVE_AT
    items.append((e - role_at, "user.role_changed", "warning",
                  f"{actor.name} changed the role of {promoted.name} from member to owner",
                  {"target_user_id": promoted.id, "from": "member", "to": "owner"},
                  None, actor.id, team))
    items.append((e - cred_at, "credential.rotated", "warning",
                  f"{actor.name} rotated the credential openai-production",
                  {"credential": "openai-production", "provider": "openai"}, None, actor.id, team))
    changes = ({"system_prompt": "edited", "model": {"from": "gpt-4o", "to": "gpt-4o-mini"}},
               {"webhook_url": "changed"},
               {"tools": {"added": ["http_request"]}})
    for at, key, change in zip(edit_at, UPDATED_AGENTS, changes, strict=True):
        agent = world.agents[key]
        items.append((e - at, "agent.updated", "info", f"{actor.name} updated agent {agent.name}",
                      {"changes": change}, agent.id, actor.id, world.teams[agent.team].id))
    callers = [a for a in world.agents.values()
               if any(provider == BURST_PROVIDER for _, provider, _ in a.models)]
    text_429 = f"{BURST_PROVIDER} returned 429 Too Many Requests (rate limit exceeded)"
    for i in range(BURST_COUNT):
        agent = callers[i % len(callers)]
        items.append((e - BURST_FROM + i * BURST_SPAN // (BURST_COUNT - 1), "provider.error",
                      "error", f"{text_429} for {agent.name}",
                      {"provider": BURST_PROVIDER, "status": 429, "model": "claude-sonnet-4"},
                      agent.id, None, world.teams[agent.team].id))
    return [event_row(make_id, fmt, ts, kind, severity, text, meta, agent_id=agent_id,
                      user_id=user_id, team_id=team_id)
            for ts, kind, severity, text, meta, agent_id, user_id, team_id in items
            if start <= ts < e]
