"""The weekly digest: how the period went, against the period before.

Sections: jobs by status, failed jobs by agent (top N, each with its most common
error), threads by source, events by severity, cron health, top token
consumers, alerts fired and resolved (passed in by the caller), sensitive
actions; charts of daily jobs and failures and of tokens by agent. Every number
is a GROUP BY in the database, read for the period and the previous one at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from audit_watch.reports.charts import daily_jobs_png, tokens_by_agent_png
from audit_watch.reports.compliance_evidence import FAILED_SIGN_IN, SIGN_IN
from audit_watch.reports.compliance_signals import new_addresses
from audit_watch.reports.crons import cron_health
from audit_watch.reports.inputs import ChartSpec, ReportData, ReportInputs, definition_of
from audit_watch.reports.model import WeeklyDigestDefinition
from audit_watch.reports.queries import (
    COUNT,
    SENSITIVE_EVENT_TYPES,
    change,
    counted_if,
    counted_noun,
    grouped,
    lookup_names,
    pivot,
    shorten,
    summed,
    totals,
)

STATUS_ORDER = ("complete", "failed", "cancelled", "retrying", "running", "queued")
SOURCE_ORDER = ("app", "slack", "discord", "email", "webhook", "cron", "other")
SEVERITY_ORDER = ("error", "warning", "info")
NEW_ADDRESS_LOOKBACK = timedelta(days=30)


def _ordered(keys: Iterable[Any], order: tuple[str, ...]) -> list[Any]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(keys, key=lambda k: (rank.get(k, len(order)), str(k)))


def _breakdown(counts: Mapping[Any, list[int]], order: tuple[str, ...], key: str) -> list[dict[str, Any]]:
    return [{key: name, **change(values[0], values[1])} for name, values in
            ((k, counts[k]) for k in _ordered(counts, order))]


def build(inputs: ReportInputs) -> ReportData:
    options: WeeklyDigestDefinition = definition_of(inputs, WeeklyDigestDefinition)
    src, conn, scope = inputs.src, inputs.conn, inputs.scope
    previous = inputs.period.previous()
    spans = [inputs.span, (previous.start, previous.end)]
    jobs, threads, events = src.table("jobs"), src.table("threads"), src.table("events")
    in_scope = {name: scope.rows(src, name) for name in ("jobs", "threads", "events")}

    status_rows = grouped(conn, src, "jobs", spans, keys={"status": jobs.c.status}, where=[in_scope["jobs"]])
    job_totals = totals(status_rows, "count", 2)
    by_status = pivot(status_rows, "status", "count", 2)
    failed = by_status.get("failed", [0, 0])

    source_rows = grouped(conn, src, "threads", spans, keys={"source": threads.c.source}, where=[in_scope["threads"]])
    severity_rows = grouped(conn, src, "events", spans, keys={"severity": events.c.severity},
                            where=[in_scope["events"]])
    failed_agents = _failed_by_agent(inputs, spans, options.top)
    tokens = _top_tokens(inputs, spans, options.top)
    sensitive = _sensitive(inputs, options.max_sensitive)
    crons = cron_health(conn, src, scope, inputs.span) if scope.kind != "user" else []
    alerts = _alerts(inputs)
    daily = _daily(inputs)

    context: dict[str, Any] = {
        "previous": previous.to_context(),
        "jobs": {
            "total": change(job_totals[0], job_totals[1]),
            "failed": change(failed[0], failed[1]),
            "failure_rate": failed[0] / job_totals[0] if job_totals[0] else None,
            "by_status": _breakdown(by_status, STATUS_ORDER, "status"),
            "failed_link": inputs.list_link("jobs", [("status", "failed")]),
        },
        "failed_by_agent": failed_agents,
        "threads": {
            "total": change(*totals(source_rows, "count", 2)),
            "by_source": _breakdown(pivot(source_rows, "source", "count", 2), SOURCE_ORDER, "source"),
            "link": inputs.list_link("threads"),
        },
        "events": {
            "total": change(*totals(severity_rows, "count", 2)),
            "by_severity": _breakdown(pivot(severity_rows, "severity", "count", 2), SEVERITY_ORDER, "severity"),
            "link": inputs.list_link("events"),
        },
        "crons": {
            "shown": scope.kind != "user",
            "rows": crons,
            "expected": sum(c["expected"] for c in crons),
            "fired": sum(c["fired"] for c in crons),
            "missed": sum(c["missed"] for c in crons),
            "with_missed": sum(1 for c in crons if c["missed"]),
        },
        "tokens": tokens,
        "alerts": alerts,
        "sensitive": sensitive,
        "sign_ins": _sign_ins(inputs, spans),
        "daily": daily,
    }
    context["highlights"] = _highlights(context)
    charts = _charts(daily, tokens["top"]) if options.charts else []
    subject = {"user": scope.people[0].name if scope.people else "", "team": f"team {scope.team_name}"}
    title = f"Weekly digest: {subject[scope.kind]}" if scope.kind in subject else "Weekly digest"
    return ReportData(title=title, context=context, charts=charts)


def _failed_by_agent(inputs: ReportInputs, spans: list[tuple[Any, Any]], top: int) -> list[dict[str, Any]]:
    src, conn = inputs.src, inputs.conn
    jobs = src.table("jobs")
    where = [inputs.scope.rows(src, "jobs"), jobs.c.status == "failed"]
    per_agent = pivot(grouped(conn, src, "jobs", spans, keys={"agent_id": jobs.c.agent_id}, where=where),
                      "agent_id", "count", 2)
    ranked = sorted(((a, v) for a, v in per_agent.items() if v[0]), key=lambda kv: (-kv[1][0], str(kv[0])))[:top]
    if not ranked:
        return []
    ids = [agent for agent, _ in ranked]
    error_rows = grouped(conn, src, "jobs", spans[:1], keys={"agent_id": jobs.c.agent_id, "error": jobs.c.error},
                         where=[*where, jobs.c.agent_id.in_(ids)])
    top_error: dict[str, tuple[int, str | None]] = {}
    # Most common first; among equals the alphabetically first, so the choice is stable.
    for row in sorted(error_rows, key=lambda r: (-r["count"], str(r["error"] or ""))):
        top_error.setdefault(row["agent_id"], (row["count"], row["error"]))
    names = lookup_names(conn, src, "agents", ids)
    out = []
    for agent, values in ranked:
        count, error = top_error.get(agent, (0, None))
        out.append({
            "agent_id": agent,
            "name": names.get(str(agent), str(agent)),
            **change(values[0], values[1]),
            "top_error": shorten(error) if error else None,
            "top_error_count": count,
            "link": inputs.list_link("jobs", [("status", "failed"), ("agent_id", agent)]),
        })
    return out


def _top_tokens(inputs: ReportInputs, spans: list[tuple[Any, Any]], top: int) -> dict[str, Any]:
    src, conn = inputs.src, inputs.conn
    jobs = src.table("jobs")
    rows = grouped(conn, src, "jobs", spans, keys={"agent_id": jobs.c.agent_id}, where=[inputs.scope.rows(src, "jobs")],
                   measures={"input": summed(jobs.c.input_tokens), "output": summed(jobs.c.output_tokens)})
    total_in, total_out = totals(rows, "input", 2), totals(rows, "output", 2)
    per_in, per_out = pivot(rows, "agent_id", "input", 2), pivot(rows, "agent_id", "output", 2)
    agents = sorted(per_in, key=lambda a: (-(per_in[a][0] + per_out[a][0]), str(a)))
    agents = [a for a in agents if per_in[a][0] + per_out[a][0] > 0][:top]
    names = lookup_names(conn, src, "agents", agents)
    grand = total_in[0] + total_out[0]
    consumers = []
    for agent in agents:
        current = per_in[agent][0] + per_out[agent][0]
        before = per_in[agent][1] + per_out[agent][1]
        consumers.append({
            "agent_id": agent,
            "name": names.get(str(agent), str(agent)),
            "input": per_in[agent][0],
            "output": per_out[agent][0],
            "share": current / grand if grand else None,
            **change(current, before),
            "link": inputs.list_link("jobs", [("agent_id", agent)]),
        })
    return {
        "total": change(total_in[0] + total_out[0], total_in[1] + total_out[1]),
        "input": total_in[0],
        "output": total_out[0],
        "top": consumers,
    }


def _sensitive(inputs: ReportInputs, limit: int) -> dict[str, Any]:
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    where = [inputs.scope.rows(src, "events"), events.c.event_type.in_(list(SENSITIVE_EVENT_TYPES))]
    by_type = pivot(grouped(conn, src, "events", [inputs.span], keys={"event_type": events.c.event_type},
                            where=where), "event_type", "count", 1)
    count = sum(v[0] for v in by_type.values())
    rows = conn.execute(
        select(events.c.id, events.c.event_type, events.c.description, events.c.user_id, events.c.agent_id,
               src.time_value(events.c.created_at).label("at"))
        .where(src.between(events.c.created_at, *inputs.span), *where)
        .order_by(src.time_value(events.c.created_at).desc(), events.c.id)
        .limit(limit)
    ).all()
    people = lookup_names(conn, src, "users", [r.user_id for r in rows])
    agents = lookup_names(conn, src, "agents", [r.agent_id for r in rows])
    items = [{
        "id": r.id,
        "at": src.read_time(r.at),
        "event_type": r.event_type,
        "action": SENSITIVE_EVENT_TYPES[r.event_type],
        "actor": people.get(str(r.user_id)) if r.user_id else None,
        "agent": agents.get(str(r.agent_id)) if r.agent_id else None,
        "description": shorten(r.description, 200),
        "link": inputs.row_link("events", r.id),
    } for r in rows]
    return {
        "count": count,
        "by_type": [{"event_type": t, "action": SENSITIVE_EVENT_TYPES[t], "count": by_type[t][0],
                     "counted": counted_noun(t, by_type[t][0])}
                    for t in sorted(by_type, key=lambda t: (-by_type[t][0], t))],
        "rows": items,
        "more": max(0, count - len(items)),
        "link": inputs.list_link("events", [("event_type", ",".join(SENSITIVE_EVENT_TYPES))]),
    }


def _alerts(inputs: ReportInputs) -> dict[str, Any]:
    lo, hi = inputs.span
    fired = [a for a in inputs.alerts if lo < a.fired_at <= hi]
    resolved = [a for a in inputs.alerts if a.resolved_at is not None and lo < a.resolved_at <= hi]
    shown = sorted({id(a): a for a in [*fired, *resolved]}.values(), key=lambda a: (a.fired_at, a.rule, a.group))
    return {
        "available": bool(inputs.alerts),
        "fired": len(fired),
        "resolved": len(resolved),
        "still_firing": sum(1 for a in fired if a.resolved_at is None or a.resolved_at > hi),
        "rows": [{"rule": a.rule, "group": a.group, "severity": a.severity, "fired_at": a.fired_at,
                   "resolved_at": a.resolved_at if a.resolved_at and a.resolved_at <= hi else None,
                   "value": a.value, "link": a.link} for a in shown],
    }


def _highlights(ctx: dict[str, Any]) -> list[dict[str, str]]:
    """The few lines worth reading first, most serious first."""
    out: list[dict[str, str]] = []
    failed = ctx["jobs"]["failed"]
    if failed["current"] and failed["pct"] is not None and failed["pct"] >= 0.25:
        out.append({"severity": "warning", "text": f"Failed jobs rose {failed['pct']:.0%} to {failed['current']:,}."})
    for index, agent in enumerate(ctx["failed_by_agent"]):
        rose = agent["previous"] is not None and agent["delta"] >= 20 and (agent["pct"] is None or agent["pct"] >= 0.25)
        if index and not rose:
            continue
        text = (f"{agent['name']} failures rose from {agent['previous']:,} to {agent['current']:,}" if rose
                else f"Most failures: {agent['name']} ({agent['current']:,})")
        out.append({"severity": "warning" if rose else "info",
                    "text": text + (f", mostly: {agent['top_error']}" if agent["top_error"] else ".")})
    for row in ctx["events"]["by_severity"]:
        if row["severity"] == "error" and row["delta"] and row["delta"] >= 10 and (row["pct"] is None or row["pct"] >= 0.5):
            out.append({"severity": "warning", "text": f"Error events rose from {row['previous']:,} to {row['current']:,}."})
    for cron in ctx["crons"]["rows"]:
        if cron["missed"]:
            out.append({"severity": "warning",
                        "text": f"Cron '{cron['name']}' missed {cron['missed']} of {cron['expected']} runs."})
    for consumer in ctx["tokens"]["top"]:
        if consumer["previous"] and consumer["current"] >= 2 * consumer["previous"]:
            out.append({"severity": "warning", "text": f"{consumer['name']} used "
                        f"{consumer['current'] / consumer['previous']:.1f}× the tokens of the previous period."})
    for source in ctx["threads"]["by_source"]:
        if source["previous"] and source["previous"] >= 20 and source["current"] <= 0.5 * source["previous"]:
            out.append({"severity": "warning", "text": f"{source['source'].capitalize()} threads fell from "
                        f"{source['previous']:,} to {source['current']:,}."})
    if ctx["sensitive"]["count"]:
        out.append({"severity": "info", "text": f"{ctx['sensitive']['count']} sensitive action(s): "
                    + ", ".join(t["counted"] for t in ctx["sensitive"]["by_type"][:4]) + "."})
    for address in ctx["sign_ins"]["new_addresses"]:
        out.append({"severity": "warning", "text": f"{address['person']} signed in from a new address, "
                    f"{address['ip']}."})
    if ctx["alerts"]["fired"]:
        out.append({"severity": "info", "text": f"{ctx['alerts']['fired']} alert(s) fired, "
                    f"{ctx['alerts']['resolved']} resolved."})
    return sorted(out, key=lambda h: h["severity"] != "warning")


def _daily(inputs: ReportInputs) -> list[dict[str, Any]]:
    """Jobs and failed jobs per day (per hour for short periods)."""
    src, conn = inputs.src, inputs.conn
    jobs = src.table("jobs")
    buckets = inputs.period.buckets()
    rows = grouped(conn, src, "jobs", [(b.start, b.end) for b in buckets], where=[inputs.scope.rows(src, "jobs")],
                   measures={"count": COUNT, "failed": counted_if(jobs.c.status == "failed")})
    counts, fails = totals(rows, "count", len(buckets)), totals(rows, "failed", len(buckets))
    return [{"label": b.label, "start": b.start, "end": b.end, "jobs": c, "failed": f}
            for b, c, f in zip(buckets, counts, fails)]


def _sign_ins(inputs: ReportInputs, spans: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Sign-ins, failed sign-ins and sign-ins from addresses new to the person."""
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    rows = grouped(conn, src, "events", spans, keys={"event_type": events.c.event_type},
                   where=[inputs.scope.rows(src, "events", people=True),
                          events.c.event_type.in_([SIGN_IN, FAILED_SIGN_IN])])
    counts = pivot(rows, "event_type", "count", 2)
    new = new_addresses(inputs, NEW_ADDRESS_LOOKBACK)["new"]
    names = lookup_names(conn, src, "users", [a["user_id"] for a in new])
    return {
        "count": change(*counts.get(SIGN_IN, [0, 0])),
        "failed": change(*counts.get(FAILED_SIGN_IN, [0, 0])),
        "new_addresses": [{**a, "person": names.get(str(a["user_id"]), str(a["user_id"]))} for a in new],
    }


def _charts(daily: list[dict[str, Any]], consumers: list[dict[str, Any]]) -> list[ChartSpec]:
    labels = [d["label"] for d in daily]
    counts, fails = [d["jobs"] for d in daily], [d["failed"] for d in daily]
    charts = [ChartSpec("daily-jobs", "Jobs and failures per day",
                        "Jobs per day: " + ", ".join(f"{label} {c:,} ({f:,} failed)"
                                                     for label, c, f in zip(labels, counts, fails)),
                        lambda: daily_jobs_png(labels, counts, fails))]
    if consumers:
        names = [c["name"] for c in consumers]
        ins, outs = [c["input"] for c in consumers], [c["output"] for c in consumers]
        charts.append(ChartSpec("tokens-by-agent", "Tokens by agent",
                                "Tokens by agent: " + ", ".join(f"{n} {i + o:,}" for n, i, o in zip(names, ins, outs)),
                                lambda: tokens_by_agent_png(names, ins, outs)))
    return charts
