"""The fixed cast of the demo workspace: teams, people, agents, crons.

The roster is drawn from its own ``random.Random(seed)`` before any activity, so
its ids depend on the seed only (not on ``days``, ``scale`` or ``end``): the
planted incidents can name their agent, cron and user without generating data.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace

COMPANY_DOMAIN = "brightline.io"

# Working-hour shape of a weekday, by local hour (0-23); weekends are quieter.
WEEKDAY_SHAPE = (
    0.04, 0.03, 0.03, 0.03, 0.04, 0.08, 0.18, 0.45, 0.85, 1.00, 1.00, 0.95,
    0.80, 0.90, 1.00, 0.95, 0.85, 0.60, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05,
)
WEEKEND_FACTOR = 0.3
# Around-the-clock agents still breathe a little with the day.
FLAT_SHAPE = tuple(0.75 + 0.25 * s for s in WEEKDAY_SHAPE)


@dataclass(frozen=True)
class Team:
    key: str
    id: str
    name: str
    tz: str


@dataclass(frozen=True)
class User:
    key: str
    id: str
    name: str
    email: str
    role: str
    teams: tuple[str, ...]
    ips: tuple[str, ...]


@dataclass(frozen=True)
class Agent:
    """One agent and how it is used, at scale 1.

    ``pattern``: "interactive" agents follow their team's working day and week
    (``threads_per_day`` on a weekday); "flat" ones (webhook intake) run around
    the clock (``threads_per_hour``, never fewer than ``min_per_hour``);
    "tasks" run a steady ``jobs_per_hour`` of thread-less jobs; "cron" agents
    only run when their cron fires. Tokens are per job, drawn within
    +-``token_spread``.
    """

    key: str
    id: str
    name: str
    team: str
    pattern: str                      # interactive | flat | tasks | cron
    sources: tuple[tuple[str, float], ...] = ()
    threads_per_day: float = 0.0      # "interactive"
    threads_per_hour: float = 0.0     # "flat"
    min_per_hour: int = 0             # "flat": never fewer in an hour, whatever the scale
    jobs_per_hour: float = 0.0        # "tasks"
    models: tuple[tuple[str, str, float], ...] = (("gpt-4o", "openai", 1.0),)
    input_tokens: int = 1500
    output_tokens: int = 300
    token_spread: float = 0.3
    fail_rate: float = 0.03
    fail_keeps_input: bool = False    # failures after the model read its input only
    eval_rate: float = 0.0            # share of chat replies an evaluator checks
    texts: str = "support"


@dataclass(frozen=True)
class Cron:
    key: str
    id: str
    agent: str
    name: str
    schedule: str
    timezone: str
    enabled: bool = True
    created_before_start: int = 6 * 3600     # seconds


@dataclass
class World:
    teams: dict[str, Team] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    crons: dict[str, Cron] = field(default_factory=dict)


def new_uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


TEAMS = (
    ("support", "Customer Support", "America/New_York"),
    ("sales", "Sales", "America/Los_Angeles"),
    ("engineering", "Engineering", "Europe/Berlin"),
    ("finops", "Finance & Operations", "Europe/London"),
    ("marketing", "Marketing", "America/New_York"),
    ("people", "People", "Europe/London"),
)

# (key, name, role, teams); the first admin is the actor of the planted
# sensitive actions, and "priya" is the member they promote to owner.
PEOPLE = (
    ("olivia", "Olivia Bennett", "owner", ("finops", "people")),
    ("daniel", "Daniel Reyes", "admin", ("engineering", "support")),
    ("hannah", "Hannah Keller", "admin", ("engineering",)),
    ("marcus", "Marcus Thompson", "admin", ("sales", "marketing")),
    ("priya", "Priya Shah", "member", ("support",)),
    ("ethan", "Ethan Brooks", "member", ("support",)),
    ("sofia", "Sofia Alvarez", "member", ("support",)),
    ("jamal", "Jamal Carter", "member", ("support",)),
    ("grace", "Grace Liu", "member", ("support",)),
    ("noah", "Noah Fischer", "member", ("support",)),
    ("ava", "Ava Patel", "member", ("sales",)),
    ("liam", "Liam O'Connor", "member", ("sales",)),
    ("chloe", "Chloe Martin", "member", ("sales",)),
    ("mateo", "Mateo Rossi", "member", ("sales",)),
    ("isabel", "Isabel Novak", "member", ("sales", "marketing")),
    ("jonas", "Jonas Weber", "member", ("engineering",)),
    ("lena", "Lena Hoffmann", "member", ("engineering",)),
    ("tobias", "Tobias Schmidt", "member", ("engineering",)),
    ("mei", "Mei Tanaka", "member", ("engineering",)),
    ("ravi", "Ravi Menon", "member", ("engineering",)),
    ("anna", "Anna Kowalski", "member", ("engineering",)),
    ("oliver", "Oliver Wright", "member", ("finops",)),
    ("amelia", "Amelia Clarke", "member", ("finops",)),
    ("harry", "Harry Evans", "member", ("finops",)),
    ("fatima", "Fatima Hassan", "member", ("finops", "people")),
    ("zoe", "Zoe Campbell", "member", ("marketing",)),
    ("lucas", "Lucas Moreau", "member", ("marketing",)),
    ("emma", "Emma Johansson", "member", ("marketing",)),
    ("samuel", "Samuel Okafor", "member", ("people",)),
    ("nina", "Nina Petrova", "member", ("people",)),
    ("kevin", "Kevin Nguyen", "member", ("support", "people")),
    ("rachel", "Rachel Green", "member", ("sales",)),
)

SENSITIVE_ACTOR = "daniel"
PROMOTED_USER = "priya"

_ANTHROPIC = ("claude-sonnet-4", "anthropic")
_OPENAI = ("gpt-4o", "openai")
_OPENAI_MINI = ("gpt-4o-mini", "openai")
_LOCAL = ("local-llama", "ollama")


def _mix(*items: tuple[tuple[str, str], float]) -> tuple[tuple[str, str, float], ...]:
    return tuple((model, provider, weight) for (model, provider), weight in items)


AGENTS = (
    Agent("triage", "", "Support Triage", "support", "interactive",
          (("app", 0.3), ("slack", 0.3), ("email", 0.4)), threads_per_day=1500,
          models=_mix((_OPENAI, 0.85), (_OPENAI_MINI, 0.15)), input_tokens=850,
          output_tokens=190, fail_rate=0.025, eval_rate=0.2, texts="support"),
    Agent("intake", "", "Ticket Intake", "support", "flat", (("webhook", 1.0),),
          threads_per_hour=15, min_per_hour=2, models=_mix((_OPENAI_MINI, 1.0)),
          input_tokens=900, output_tokens=180, fail_rate=0.02, texts="intake"),
    Agent("refunds", "", "Refund Assistant", "support", "interactive",
          (("email", 0.7), ("app", 0.3)), threads_per_day=385,
          models=_mix((_ANTHROPIC, 1.0)), input_tokens=1900, output_tokens=380,
          fail_rate=0.03, eval_rate=0.25, texts="refunds"),
    Agent("copilot", "", "Sales Copilot", "sales", "interactive",
          (("app", 0.5), ("slack", 0.5)), threads_per_day=540,
          models=_mix((_ANTHROPIC, 0.7), (_OPENAI, 0.3)), input_tokens=2100,
          output_tokens=450, fail_rate=0.03, eval_rate=0.1, texts="sales"),
    Agent("leads", "", "Lead Router", "sales", "flat", (("webhook", 1.0),),
          threads_per_hour=8, min_per_hour=1, models=_mix((_OPENAI_MINI, 1.0)),
          input_tokens=700, output_tokens=120, fail_rate=0.02, texts="leads"),
    Agent("reviewer", "", "Code Reviewer", "engineering", "interactive",
          (("slack", 0.6), ("app", 0.4)), threads_per_day=600,
          models=_mix((_ANTHROPIC, 1.0)), input_tokens=2600, output_tokens=520,
          fail_rate=0.03, eval_rate=0.15, texts="code"),
    Agent("scribe", "", "Incident Scribe", "engineering", "interactive",
          (("slack", 0.8), ("app", 0.2)), threads_per_day=260,
          models=_mix((_ANTHROPIC, 0.6), (_LOCAL, 0.4)), input_tokens=1600,
          output_tokens=400, fail_rate=0.03, texts="incident"),
    Agent("kbsync", "", "Knowledge Base Sync", "engineering", "tasks",
          jobs_per_hour=10, models=_mix((_ANTHROPIC, 1.0)), input_tokens=12400,
          output_tokens=758, token_spread=0.04, fail_rate=0.02, fail_keeps_input=True, texts="kb"),
    Agent("nightly", "", "Nightly Report", "finops", "cron",
          models=_mix((_OPENAI, 1.0)), input_tokens=5200, output_tokens=900,
          token_spread=0.1, fail_rate=0.0, texts="report"),
    Agent("invoices", "", "Invoice Processor", "finops", "interactive",
          (("email", 0.8), ("app", 0.2)), threads_per_day=460,
          models=_mix((_OPENAI, 0.6), (_OPENAI_MINI, 0.4)), input_tokens=1400,
          output_tokens=260, fail_rate=0.035, texts="invoice"),
    Agent("expenses", "", "Expense Auditor", "finops", "interactive",
          (("app", 1.0),), threads_per_day=140, models=_mix((_OPENAI, 1.0)),
          input_tokens=1500, output_tokens=300, fail_rate=0.03, texts="expense"),
    Agent("writer", "", "Marketing Writer", "marketing", "interactive",
          (("app", 0.7), ("slack", 0.3)), threads_per_day=310,
          models=_mix((_ANTHROPIC, 0.6), (_LOCAL, 0.4)), input_tokens=1800,
          output_tokens=700, fail_rate=0.025, texts="marketing"),
    Agent("helpdesk", "", "HR Helpdesk", "people", "interactive",
          (("slack", 0.7), ("email", 0.3)), threads_per_day=260,
          models=_mix((_OPENAI_MINI, 1.0)), input_tokens=1100, output_tokens=260,
          fail_rate=0.02, texts="hr"),
)

CRONS = (
    Cron("standup", "", "reviewer", "Standup digest", "0 9 * * 1-5", "Europe/Berlin"),
    Cron("pipeline", "", "copilot", "Morning pipeline brief", "30 8 * * *", "America/New_York"),
    Cron("nightly", "", "nightly", "Nightly finance report", "0 2 * * *", "UTC"),
    Cron("sweep", "", "expenses", "Hourly expense sweep", "15 * * * *", "UTC"),
    Cron("backlog", "", "triage", "Ticket backlog summary", "0 */4 * * *", "UTC"),
    Cron("weekly", "", "writer", "Weekly metrics digest", "0 7 * * 1", "UTC"),
    Cron("access", "", "expenses", "Quarterly access review", "0 10 1 */3 *", "UTC",
         enabled=False),
)


def _slug(name: str) -> str:
    first, last = name.lower().replace("'", "").split(" ", 1)
    return f"{first}.{last.replace(' ', '')}"


def build_world(seed: int) -> World:
    """The roster for ``seed``; ids and the people's IP addresses vary with it."""
    rng = random.Random(f"audit-watch-world:{seed}")
    world = World()
    for key, name, tz in TEAMS:
        world.teams[key] = Team(key, new_uuid4(rng), name, tz)
    office_ip = {key: f"203.0.113.{10 + 20 * i + rng.randrange(10)}"
                 for i, (key, _, _) in enumerate(TEAMS)}
    used: set[str] = set(office_ip.values())
    for key, name, role, teams in PEOPLE:
        ips = [office_ip[teams[0]]]
        for _ in range(rng.choice((1, 1, 2))):     # home, sometimes a phone too
            while True:
                ip = f"198.51.100.{rng.randrange(2, 200)}" if rng.random() < 0.6 \
                    else f"192.0.2.{rng.randrange(2, 250)}"
                if ip not in used:
                    used.add(ip)
                    ips.append(ip)
                    break
        world.users[key] = User(key, new_uuid4(rng), name,
                                f"{_slug(name)}@{COMPANY_DOMAIN}", role, teams, tuple(ips))
    for agent in AGENTS:
        world.agents[agent.key] = replace(agent, id=new_uuid4(rng))
    for cron in CRONS:
        world.crons[cron.key] = replace(cron, id=new_uuid4(rng),
                                        created_before_start=rng.randrange(2 * 3600, 20 * 3600))
    return world


# An address never used by anyone in the background (documentation range).
NEW_IP = "198.51.100.231"
