"""The signals a triage looks at, each against its own usual level.

"Usual" is the median over baseline windows of the same length: the same time
of day on each of the 7 days before for windows of a day or less (so a quiet
night is compared with other nights), else the 4 windows before. Baseline
windows from before the data began are left out. A signal is worth
investigating when it reaches ``min_count`` and ``factor`` × its usual level;
otherwise it is "probably nothing" and is summed up in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import not_
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.reports.compliance_signals import new_addresses
from audit_watch.reports.crons import cron_health
from audit_watch.reports.inputs import ReportInputs
from audit_watch.reports.model import TriageDefinition
from audit_watch.reports.queries import (
    ACCESS_EVENT_TYPES,
    COUNT,
    SENSITIVE_EVENT_TYPES,
    Span,
    counted_if,
    counted_noun,
    grouped,
    lookup_names,
    median,
    newest_ids,
    shorten,
    summed,
)

SEVERITY_WEIGHT = {"critical": 3, "warning": 2, "info": 1}
HANDLED_EVENTS = {"provider.error", "auth.login_failed", "agent.evaluation", "cron.fired", "auth.login",
                  *SENSITIVE_EVENT_TYPES}


@dataclass
class Item:
    """One thing found: worth investigating (warning, critical) or probably nothing (info)."""

    kind: str
    title: str
    severity: str
    check: str
    current: float = 0
    usual: float | None = None
    detail: str | None = None
    list_link: str | None = None
    row_links: list[str] = field(default_factory=list)
    sample: Callable[[], list[str]] | None = None    # row links, fetched only for items that are shown

    @property
    def deviation(self) -> float:
        return (self.current + 1) / ((self.usual or 0) + 1)

    @property
    def score(self) -> float:
        return SEVERITY_WEIGHT[self.severity] * 1000 + min(self.deviation, 999)


@dataclass
class Triage:
    inputs: ReportInputs
    options: TriageDefinition
    spans: list[Span]             # [window, baseline windows...]
    usable: list[bool]            # which baseline windows the data covers
    normal: list[str] = field(default_factory=list)

    def compare(self, rows: Sequence[dict[str, Any]], key: str,
                measure: str = "count") -> dict[Any, tuple[int, float | None]]:
        """{key: (count in the window, median over the usable baseline windows)}."""
        values: dict[Any, list[int]] = {}
        for row in rows:
            values.setdefault(row[key], [0] * len(self.spans))[row["p"]] = row[measure]
        out = {}
        for k, counts in values.items():
            baseline = [c for c, ok in zip(counts[1:], self.usable[1:]) if ok]
            out[k] = (counts[0], median(baseline))
        return out

    def unusual(self, current: int, usual: float | None) -> bool:
        """At least ``min_count``, ``factor`` × the usual level, and beyond what chance
        gives a count of that level (three standard deviations of a Poisson count)."""
        level = max(usual or 0.0, 1.0)
        return (current >= self.options.min_count and current >= self.options.factor * level
                and current >= (usual or 0.0) + 3 * level ** 0.5)

    def rows_of(self, table: str, where: list[ColumnElement[bool]], tab: str | None = None) -> Callable[[], list[str]]:
        inputs = self.inputs
        return lambda: [inputs.row_link(tab or table, rid)
                        for rid in newest_ids(inputs.conn, inputs.src, table, inputs.span, where, limit=3)]

    @property
    def window_name(self) -> str:
        return self.inputs.period.name


def baseline_spans(window: Span, count_short: int = 7, count_long: int = 4) -> list[Span]:
    start, end = window
    length = end - start
    step = timedelta(days=1) if length <= timedelta(days=1) else length
    count = count_short if length <= timedelta(days=1) else count_long
    return [(start - step * k, end - step * k) for k in range(1, count + 1)]


def _usual(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _failure_check(error: str | None) -> str:
    text = (error or "").lower()
    if "quota" in text or "429" in text or "rate limit" in text:
        return "the provider account's quota and billing, and whether retries multiply the calls"
    if "credential" in text or "401" in text or "api key" in text or "unauthorized" in text:
        return "the provider credential: expired, rotated or revoked? (credential.* events)"
    if "timed out" in text or "timeout" in text:
        return "the provider's status page and the model's latency"
    if "tool" in text:
        return "the upstream service the tool calls"
    return "the error message of its newest failed jobs"


def failed_jobs(t: Triage) -> list[Item]:
    inputs = t.inputs
    src, conn = inputs.src, inputs.conn
    jobs = src.table("jobs")
    failed = jobs.c.status == "failed"
    rows = grouped(conn, src, "jobs", t.spans, keys={"agent_id": jobs.c.agent_id},
                   where=[inputs.scope.rows(src, "jobs")], measures={"jobs": COUNT, "failed": counted_if(failed)})
    stats = t.compare(rows, "agent_id", "failed")
    totals = t.compare(rows, "agent_id", "jobs")
    flagged = [a for a, (cur, usual) in stats.items() if t.unusual(cur, usual)]
    errors: dict[str, str | None] = {}
    if flagged:
        error_rows = grouped(conn, src, "jobs", t.spans[:1], keys={"agent_id": jobs.c.agent_id, "error": jobs.c.error},
                             where=[inputs.scope.rows(src, "jobs"), failed, jobs.c.agent_id.in_(flagged)])
        for row in sorted(error_rows, key=lambda r: (-r["count"], str(r["error"] or ""))):
            errors.setdefault(row["agent_id"], row["error"])
    names = lookup_names(conn, src, "agents", flagged)
    items = []
    for agent in sorted(flagged, key=str):
        cur, usual = stats[agent]
        total = totals[agent][0]
        rate = cur / total if total else 0.0
        severity = "critical" if (rate >= 0.5 and cur >= 10) or (cur + 1) / ((usual or 0) + 1) >= 10 else "warning"
        name = names.get(str(agent), str(agent))
        where = [inputs.scope.rows(src, "jobs"), failed, jobs.c.agent_id == agent]
        items.append(Item("failed_jobs", f"{name}: {cur:,} failed jobs in {t.window_name} ({rate:.0%} of its jobs), "
                          f"against a usual {_usual(usual)}", severity,
                          f"{name}'s errors: {_failure_check(errors.get(agent))}", cur, usual,
                          detail=f"most often: {shorten(errors.get(agent))}" if errors.get(agent) else None,
                          list_link=inputs.list_link("jobs", [("status", "failed"), ("agent_id", agent)]),
                          sample=t.rows_of("jobs", where)))
    rest = [(cur, usual) for a, (cur, usual) in stats.items() if a not in flagged and cur]
    if rest:
        other = " other" if flagged else ""
        t.normal.append(f"Failed jobs: {sum(c for c, _ in rest):,} across {len(rest)}{other} agent(s), each within "
                        "its usual range.")
    return items


def provider_errors(t: Triage) -> list[Item]:
    inputs = t.inputs
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    provider = src.json_text(events.c["metadata"], "provider")
    base = [inputs.scope.rows(src, "events"), events.c.event_type == "provider.error"]
    rows = grouped(conn, src, "events", t.spans, keys={"provider": provider}, where=base)
    items = []
    for name, (cur, usual) in sorted(t.compare(rows, "provider").items(), key=lambda kv: str(kv[0])):
        if not t.unusual(cur, usual):
            if cur:
                t.normal.append(f"Provider errors from {name}: {cur:,}, against a usual {_usual(usual)}.")
            continue
        severity = "critical" if cur >= 20 and (cur + 1) / ((usual or 0) + 1) >= 10 else "warning"
        items.append(Item("provider_errors", f"{cur:,} errors from provider {name} in {t.window_name}, against a "
                          f"usual {_usual(usual)}", severity,
                          f"{name}'s status page and your rate limits with it; spread the calls or raise the limit",
                          cur, usual, list_link=inputs.list_link("events", [("event_type", "provider.error"),
                                                                           ("metadata.provider", name)]),
                          sample=t.rows_of("events", [*base, provider == name])))
    return items


def other_events(t: Triage) -> list[Item]:
    """Warnings and errors of the other event types (cron.failed, integration.disconnected, ...)."""
    inputs = t.inputs
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    base = [inputs.scope.rows(src, "events"), events.c.severity.in_(["warning", "error"]),
            not_(events.c.event_type.in_(sorted(HANDLED_EVENTS)))]
    rows = grouped(conn, src, "events", t.spans, keys={"event_type": events.c.event_type}, where=base)
    items = []
    for event_type, (cur, usual) in sorted(t.compare(rows, "event_type").items()):
        always = event_type in ("cron.failed", "integration.disconnected")
        if not (cur and (always or t.unusual(cur, usual))):
            if cur:
                t.normal.append(f"{event_type}: {cur:,} warning/error events, against a usual {_usual(usual)}.")
            continue
        items.append(Item("events", f"{cur:,} {event_type} events in {t.window_name}, against a usual {_usual(usual)}",
                          "warning", f"the description and metadata of the newest {event_type} events", cur, usual,
                          list_link=inputs.list_link("events", [("event_type", event_type)]),
                          sample=t.rows_of("events", [*base, events.c.event_type == event_type])))
    return items


def per_agent_spikes(t: Triage) -> list[Item]:
    """Evaluator failures, job volume and input tokens per job, per agent."""
    inputs = t.inputs
    src, conn = inputs.src, inputs.conn
    jobs, events = src.table("jobs"), src.table("events")
    items: list[Item] = []
    rows = grouped(conn, src, "jobs", t.spans, keys={"agent_id": jobs.c.agent_id}, where=[inputs.scope.rows(src, "jobs")],
                   measures={"jobs": COUNT, "input": summed(jobs.c.input_tokens)})
    evaluations = grouped(conn, src, "events", t.spans, keys={"agent_id": events.c.agent_id},
                          where=[inputs.scope.rows(src, "events"), events.c.event_type == "agent.evaluation",
                                 events.c.severity == "warning"])
    volume, tokens = t.compare(rows, "agent_id", "jobs"), t.compare(rows, "agent_id", "input")
    per_job: dict[Any, list[float]] = {}
    for row in rows:
        average = row["input"] / row["jobs"] if row["jobs"] else 0
        per_job.setdefault(row["agent_id"], [0.0] * len(t.spans))[row["p"]] = average
    grades = t.compare(evaluations, "agent_id")
    names = lookup_names(conn, src, "agents", set(volume) | set(grades))
    for agent, (cur, usual) in sorted(grades.items(), key=lambda kv: str(kv[0])):
        if t.unusual(cur, usual):
            name = names.get(str(agent), str(agent))
            items.append(Item("evaluations", f"{name}: the evaluator failed {cur:,} replies in {t.window_name}, "
                              f"against a usual {_usual(usual)}", "warning",
                              f"{name}'s recent answers and any recent edit to it (agent.updated events)", cur, usual,
                              list_link=inputs.list_link("events", [("event_type", "agent.evaluation"),
                                                                     ("agent_id", agent)])))
    for agent, (cur, usual) in sorted(volume.items(), key=lambda kv: str(kv[0])):
        name = names.get(str(agent), str(agent))
        if cur >= 50 and t.unusual(cur, usual):
            items.append(Item("volume", f"{name} ran {cur:,} jobs in {t.window_name}, against a usual {_usual(usual)}",
                              "warning", f"what triggers {name} (crons, webhooks) for a loop or a retry storm", cur,
                              usual, list_link=inputs.list_link("jobs", [("agent_id", agent)])))
        history = [v for v, ok in zip(per_job.get(agent, [])[1:], t.usable[1:]) if ok and v]
        usual_per_job, now_per_job = median(history), per_job.get(agent, [0.0])[0]
        if cur >= 10 and usual_per_job and now_per_job >= t.options.growth_factor * usual_per_job:
            items.append(Item("tokens", f"{name}: {now_per_job:,.0f} input tokens per job, "
                              f"{now_per_job / usual_per_job:.1f}× its usual {usual_per_job:,.0f}", "warning",
                              f"{name}'s context files: it may be looping over a large file or a growing conversation",
                              now_per_job, usual_per_job, detail=f"{tokens[agent][0]:,} input tokens in {t.window_name}",
                              list_link=inputs.list_link("jobs", [("agent_id", agent)])))
    return items


def silent_sources(t: Triage) -> list[Item]:
    """Thread sources of an agent that went quiet (a webhook or integration that stopped)."""
    inputs = t.inputs
    src, conn = inputs.src, inputs.conn
    threads = src.table("threads")
    rows = grouped(conn, src, "threads", t.spans, keys={"agent_id": threads.c.agent_id, "source": threads.c.source},
                   where=[inputs.scope.rows(src, "threads")])
    keyed = [{**r, "key": (r["agent_id"], r["source"])} for r in rows]
    quiet = [(key, cur, usual) for key, (cur, usual) in t.compare(keyed, "key").items()
             if usual is not None and usual >= max(t.options.min_count, 5) and cur <= usual / (t.options.factor * 2)]
    names = lookup_names(conn, src, "agents", [key[0] for key, _, _ in quiet])
    items = []
    for (agent, source), cur, usual in sorted(quiet, key=lambda q: (str(q[0][0]), str(q[0][1]))):
        name = names.get(str(agent), str(agent))
        what = "no" if cur == 0 else f"only {cur:,}"
        items.append(Item("silent", f"{name}: {what} {source} threads in {t.window_name}, against a usual {_usual(usual)}",
                          "warning", f"the {source} connection of {name} (integration.* events) and the system that "
                          "sends to it", cur, usual,
                          list_link=inputs.list_link("threads", [("agent_id", agent), ("source", source)],
                                                     span=(t.spans[1][0], t.spans[0][1]))))
    return items


def crons(t: Triage) -> list[Item]:
    inputs = t.inputs
    if inputs.scope.kind == "user":
        return []
    health = cron_health(inputs.conn, inputs.src, inputs.scope, inputs.span)
    items = []
    for cron in health:
        if not cron["missed"]:
            continue
        last = cron["last_fired"]
        since = f"; last fired {inputs.period.local(last):%a %d %b %H:%M}" if last else "; no run fired in 35 days"
        items.append(Item("cron", f"Cron '{cron['name']}' ({cron['agent']}) missed {cron['missed']} of "
                          f"{cron['expected']} expected runs{since}", "critical" if cron["missed"] >= 2 else "warning",
                          f"that the cron '{cron['name']}' is enabled and its schedule ({cron['schedule']}, "
                          f"{cron['timezone']}) is right; cron.failed events", cron["missed"], 0,
                          list_link=inputs.list_link("events", [("event_type", "cron.fired"),
                                                                ("metadata.cron_id", cron["id"])],
                                                     span=(inputs.period.end - timedelta(days=7), inputs.period.end))))
    fine = [c for c in health if not c["missed"] and c["expected"]]
    if fine:
        t.normal.append(f"Crons: {len(fine)} fired every expected run.")
    return items


def people(t: Triage) -> list[Item]:
    """New sign-in addresses, failed sign-ins and sensitive actions, per person."""
    inputs = t.inputs
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    addresses = new_addresses(inputs, t.options.new_ip_lookback)["new"]
    sensitive = [inputs.scope.rows(src, "events"), events.c.event_type.in_(list(SENSITIVE_EVENT_TYPES))]
    actions = grouped(conn, src, "events", t.spans, keys={"user_id": events.c.user_id, "event_type": events.c.event_type},
                      where=sensitive)
    failures = grouped(conn, src, "events", t.spans, keys={"user_id": events.c.user_id},
                       where=[inputs.scope.rows(src, "events"), events.c.event_type == "auth.login_failed"])
    in_window = [r for r in actions if r["p"] == 0]
    names = lookup_names(conn, src, "users", {r["user_id"] for r in in_window} | {r["user_id"] for r in failures}
                         | {a["user_id"] for a in addresses})
    new_by_user = {a["user_id"]: a for a in addresses}
    items: list[Item] = []
    for address in addresses:
        if address["user_id"] in {r["user_id"] for r in in_window}:
            continue    # told together with the sensitive actions that followed
        person = names.get(str(address["user_id"]), str(address["user_id"]))
        items.append(Item("new_ip", f"{person} signed in from a new address, {address['ip']}, at "
                          f"{inputs.period.local(address['first']):%a %d %b %H:%M}", "warning",
                          f"with {person} that the sign-in from {address['ip']} was theirs", 1, 0,
                          list_link=address["link"]))
    by_user: dict[Any, dict[str, int]] = {}
    for row in in_window:
        by_user.setdefault(row["user_id"], {})[row["event_type"]] = row["count"]
    usual = t.compare([{**r, "key": r["user_id"]} for r in actions], "key")
    for user, types in sorted(by_user.items(), key=lambda kv: str(kv[0])):
        name = names.get(str(user), "someone" if user is None else str(user))
        count = sum(types.values())
        words = ", ".join(counted_noun(k, n) for k, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))
        access = any(k in ACCESS_EVENT_TYPES for k in types)
        after_new_ip = user in new_by_user
        where = [*sensitive, events.c.user_id == user] if user is not None else [*sensitive, events.c.user_id.is_(None)]
        if after_new_ip or access or t.unusual(count, usual.get(user, (0, None))[1]):
            severity = "critical" if after_new_ip and access else "warning"
            address = new_by_user.get(user)
            tail = (f", after signing in from a new address, {address['ip']}, at "
                    f"{inputs.period.local(address['first']):%H:%M}") if address else ""
            items.append(Item("sensitive", f"{name}: {count} sensitive action(s) in {t.window_name} ({words}){tail}",
                              severity, f"with {name} that these changes were intended: {words}", count,
                              usual.get(user, (0, None))[1], list_link=inputs.list_link("events", [
                                  ("event_type", ",".join(sorted(types))), ("user_id", user)]),
                              sample=t.rows_of("events", where)))
        else:
            t.normal.append(f"{name}: {words}, as usual for them.")
    for user, (cur, usual_failed) in sorted(t.compare(failures, "user_id").items(), key=lambda kv: str(kv[0])):
        if t.unusual(cur, usual_failed):
            name = names.get(str(user), str(user))
            items.append(Item("failed_sign_ins", f"{name}: {cur} failed sign-ins in {t.window_name}", "warning",
                              f"whether someone is guessing {name}'s password (the addresses of the failed sign-ins)",
                              cur, usual_failed, list_link=inputs.list_link("events", [
                                  ("event_type", "auth.login_failed"), ("user_id", user)])))
        elif cur:
            t.normal.append(f"Failed sign-ins of {names.get(str(user), str(user))}: {cur}, against a usual "
                            f"{_usual(usual_failed)}.")
    return items


SIGNALS: tuple[Callable[[Triage], list[Item]], ...] = (
    failed_jobs, provider_errors, crons, people, silent_sources, per_agent_spikes, other_events,
)
