"""Background system events: cron runs, sign-ins, scattered provider errors.

None of them is sensitive (no agent, role, credential, API-key or config
change): those appear only as planted incidents.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from audit_watch.core.cron import CronSchedule
from audit_watch.demo.seed.rows import TimeText, event_row
from audit_watch.demo.seed.world import Cron, World

DAY = 86400
IP_MAX_GAP_DAYS = 3          # every known address is used at least this often
PROVIDER_ERROR_GAP = 6 * 60  # scattered errors never come closer: at most 3 in 15 minutes


def cron_created_at(cron: Cron, start: int) -> int:
    return start - cron.created_before_start


def cron_runs(world: World, rng: random.Random, start: int, end: int,
              stop: dict[str, int]) -> list[tuple[int, int, Cron]]:
    """(fired, expected, cron) for every scheduled run of every enabled cron since
    it was created, DST-correct in its own time zone, fired 20 s to 2.5 min late."""
    runs = []
    for cron in world.crons.values():
        if not cron.enabled:
            continue
        last = min(stop.get(cron.key, end), end)
        schedule = CronSchedule.read(cron.schedule, cron.timezone)
        # a run due at the very second the cron was created is expected too
        for run in schedule.runs_after(datetime.fromtimestamp(cron_created_at(cron, start) - 1, UTC)):
            expected = int(run.timestamp())
            if expected >= last:
                break
            fired = expected + 20 + rng.randrange(130)
            if fired < end:
                runs.append((fired, expected, cron))
    runs.sort(key=lambda run: run[0])
    return runs


def cron_fired_row(world: World, cron: Cron, fired: int, make_id: Callable[[int], str],
                   fmt: TimeText) -> tuple:
    agent = world.agents[cron.agent]
    return event_row(make_id, fmt, fired, "cron.fired", "info", f"Cron '{cron.name}' fired",
                     {"cron_id": cron.id}, agent_id=agent.id,
                     team_id=world.teams[agent.team].id)


def _local_days(tz: str, start: int, end: int) -> Iterator[tuple[int, datetime]]:
    zone = ZoneInfo(tz)
    day = datetime.fromtimestamp(start, zone).replace(hour=0, minute=0, second=0)
    last = datetime.fromtimestamp(end, zone).date()
    index = 0
    while day.date() <= last:
        yield index, day
        index += 1
        day = (day + timedelta(days=1, hours=3)).replace(hour=0)   # DST-safe


def logins(world: World, rng: random.Random, start: int, end: int,
           make_id: Callable[[int], str], fmt: TimeText) -> list[tuple]:
    """auth.login for everyone from their few usual addresses, plus a rare failed one.

    The office address on most weekdays in the morning, home or phone some
    evenings; any address unused for IP_MAX_GAP_DAYS days is used that day, so
    no known address ever looks new within a two-week lookback.
    """
    rows = []
    for user in world.users.values():
        team = world.teams[user.teams[0]]
        last_use = {ip: -IP_MAX_GAP_DAYS for ip in user.ips}
        for index, day in _local_days(team.tz, start, end):
            weekday = day.weekday() < 5
            for j, ip in enumerate(user.ips):
                office = j == 0
                p = (0.85 if office else 0.35) if weekday else (0.05 if office else 0.3)
                if rng.random() >= p and index - last_use[ip] < IP_MAX_GAP_DAYS:
                    continue
                hour = 7.5 + 2.5 * rng.random() if office else 19 + 3 * rng.random()
                ts = int((day + timedelta(hours=hour)).timestamp())
                if start <= ts < end:
                    rows.append(event_row(make_id, fmt, ts, "auth.login", "info",
                                          f"{user.name} signed in", {"ip": ip},
                                          user_id=user.id, team_id=team.id))
                    last_use[ip] = index
    users = list(world.users.values())
    ts = start
    while True:
        ts += int(rng.expovariate(1 / (2 * DAY)))
        if ts >= end:
            break
        user = rng.choice(users)
        reason = rng.choice(("wrong password", "wrong password", "expired MFA code"))
        rows.append(event_row(make_id, fmt, ts, "auth.login_failed", "warning",
                              f"Failed sign-in for {user.email}: {reason}",
                              {"ip": rng.choice(user.ips), "reason": reason}, user_id=user.id,
                              team_id=world.teams[user.teams[0]].id))
    return rows


_STATUS = ((500, "500 Internal Server Error"), (502, "502 Bad Gateway"),
           (503, "503 Service Unavailable"), (529, "529 Overloaded"),
           (429, "429 Too Many Requests"))


def provider_errors(world: World, rng: random.Random, start: int, end: int, scale: float,
                    make_id: Callable[[int], str], fmt: TimeText) -> list[tuple]:
    """A few scattered provider.error events (about 2-4 a day), never bunched."""
    per_day = min(2 + 2 * scale, 60)
    callers: dict[str, list] = {}
    for agent in world.agents.values():
        for model, provider, _ in agent.models:
            if provider in ("openai", "anthropic"):
                callers.setdefault(provider, []).append((agent, model))
    rows = []
    ts = start
    while True:
        ts += PROVIDER_ERROR_GAP + int(rng.expovariate(per_day / DAY))
        if ts >= end:
            break
        provider = "openai" if rng.random() < 0.55 else "anthropic"
        status, text = rng.choice(_STATUS)
        agent, model = rng.choice(callers[provider])
        rows.append(event_row(make_id, fmt, ts, "provider.error", "error",
                              f"{provider} returned {text} for {agent.name}",
                              {"provider": provider, "status": status, "model": model},
                              agent_id=agent.id, team_id=world.teams[agent.team].id))
    return rows
