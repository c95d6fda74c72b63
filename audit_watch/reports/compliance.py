"""The compliance summary of a user or a team: what they did, in paragraphs worth forwarding.

Thread count and the agents used most, failed jobs, sign-ins, failed sign-ins and
new addresses, every sensitive action (role, credential, API-key, agent and
configuration changes) and changes others made to their accounts, then anything
unusual: activity outside working hours, spikes against their own earlier
periods, sensitive actions right after a sign-in from a new address.

Counts are GROUP BYs in the database; the evidence (every row the summary rests
on) is fetched once for the CSV, and the prose is a Jinja template over the
numbers, so the same data always gives the same words.
"""

from __future__ import annotations

from typing import Any

from audit_watch.reports import compliance_signals as signals
from audit_watch.reports.compliance_evidence import (
    FAILED_SIGN_IN,
    SECTIONS,
    SIGN_IN,
    OffHours,
    account_change_conditions,
    acted_types,
    evidence_csv,
    fetch_evidence,
)
from audit_watch.reports.compliance_signals import metric_series
from audit_watch.reports.inputs import ReportData, ReportInputs, definition_of
from audit_watch.reports.model import WEEKDAYS, ComplianceDefinition
from audit_watch.reports.periods import off_hours_spans
from audit_watch.reports.queries import (
    ACCESS_EVENT_TYPES,
    SENSITIVE_EVENT_TYPES,
    covered,
    data_start,
    grouped,
    lookup_names,
    pivot,
    shorten,
    totals,
)


def build(inputs: ReportInputs) -> ReportData:
    options: ComplianceDefinition = definition_of(inputs, ComplianceDefinition)
    src, conn, scope, period = inputs.src, inputs.conn, inputs.scope, inputs.period
    spans = [inputs.span] + [(p.start, p.end) for p in period.history(options.history)]
    people_rows = {name: scope.rows(src, name, people=True) for name in ("jobs", "threads", "events")}
    jobs, threads, events = src.table("jobs"), src.table("threads"), src.table("events")

    # Every metric for the period and its history, per person: five GROUP BYs.
    thread_rows = grouped(conn, src, "threads", spans, keys={"user_id": threads.c.user_id},
                          where=[people_rows["threads"]])
    failed_rows = grouped(conn, src, "jobs", spans, keys={"user_id": jobs.c.user_id},
                          where=[people_rows["jobs"], jobs.c.status == "failed"])
    event_rows = grouped(conn, src, "events", spans, keys={"user_id": events.c.user_id, "event_type": events.c.event_type},
                         where=[people_rows["events"], events.c.event_type.in_(acted_types())])
    all_periods = [period, *period.history(options.history)]
    series = metric_series(thread_rows, failed_rows, event_rows, len(spans))
    counts = {metric: values[0] for metric, values in series.items()}
    account_changes = grouped(conn, src, "events", [inputs.span], where=account_change_conditions(inputs))
    counts["account_changes"] = totals(account_changes, "count", 1)[0]
    usable = covered(spans, data_start(conn, src))
    outside = signals.off_hours(inputs, options, all_periods, series, usable)
    addresses = signals.new_addresses(inputs, options.new_ip_lookback)

    # The evidence: every row counted above, once.
    evidence = fetch_evidence(inputs, inputs.span)
    people = {p.id: (p.name, p.email) for p in scope.people}
    agent_names = lookup_names(conn, src, "agents", {row.agent_id for row in evidence})
    people.update({k: (v, "") for k, v in lookup_names(
        conn, src, "users", {r.user_id for r in evidence if r.user_id and r.user_id not in people}).items()})
    off = OffHours([(b.start, b.end) for b in off_hours_spans(period, *options.hours, options.weekdays)])
    csv_text = evidence_csv(evidence, inputs, people, agent_names, off)
    sensitive = [_action(inputs, r, people, agent_names, r.at in off) for r in evidence
                 if r.section in ("sensitive_action", "account_change")]
    actions = [s for s in sensitive if s["section"] == "sensitive_action"]
    findings = signals.findings(options, period, series, usable, outside, addresses["new"], actions, counts)
    context: dict[str, Any] = {
        "subject": _subject(inputs),
        "counts": counts,
        "agents_used": _agents_used(inputs),
        "sources": _thread_sources(inputs),
        "failed_jobs": _failed_jobs(inputs),
        "sign_ins": _sign_in_summary(inputs, addresses),
        "sensitive": {
            "actions": actions[: options.max_listed],
            "account_changes": [s for s in sensitive if s["section"] == "account_change"][: options.max_listed],
            "by_action": _by_action(sensitive),
            "more": max(0, len(sensitive) - 2 * options.max_listed),
        },
        "per_person": _per_person(inputs, thread_rows, failed_rows, event_rows) if scope.kind == "team" else [],
        "working_hours": {"hours": options.working_hours,
                          "days": ", ".join(d.capitalize() for d in WEEKDAYS if d in options.working_days)},
        "off_hours": outside,
        "findings": findings,
        "report_options": {"new_ip_lookback_days": options.new_ip_lookback.days, "history": options.history},
        "history": {"periods": sum(usable[1:]), "series": {m: series[m][1:] for m in signals.METRICS}},
        "evidence": {"rows": len(evidence),
                     "by_section": {s: sum(1 for r in evidence if r.section == s) for s in SECTIONS}},
    }
    subject = scope.people[0].name if scope.kind == "user" else f"team {scope.team_name}"
    return ReportData(title=f"Compliance summary: {subject}", context=context, evidence_csv=csv_text)


def _subject(inputs: ReportInputs) -> dict[str, Any]:
    scope = inputs.scope
    person = scope.people[0] if scope.kind == "user" else None
    return {
        "kind": scope.kind,
        "name": person.name if person else scope.team_name,
        "email": person.email if person else None,
        "role": person.role if person else None,
        "members": len(scope.people),
        "threads_link": inputs.list_link("threads", scoped=False,
                                         filters=[("user_id", person.id)] if person else [("team_id", scope.team_id)]),
    }


def _agents_used(inputs: ReportInputs, top: int = 5) -> dict[str, Any]:
    src, conn = inputs.src, inputs.conn
    threads = src.table("threads")
    rows = grouped(conn, src, "threads", [inputs.span], keys={"agent_id": threads.c.agent_id},
                   where=[inputs.scope.rows(src, "threads", people=True)])
    ranked = sorted(rows, key=lambda r: (-r["count"], str(r["agent_id"])))
    names = lookup_names(conn, src, "agents", [r["agent_id"] for r in ranked[:top]])
    total = sum(r["count"] for r in rows)
    return {
        "distinct": len(rows),
        "top": [{"agent_id": r["agent_id"], "name": names.get(str(r["agent_id"]), str(r["agent_id"])),
                 "threads": r["count"], "share": r["count"] / total if total else None} for r in ranked[:top]],
    }


def _thread_sources(inputs: ReportInputs) -> list[dict[str, Any]]:
    src = inputs.src
    threads = src.table("threads")
    rows = grouped(inputs.conn, src, "threads", [inputs.span], keys={"source": threads.c.source},
                   where=[inputs.scope.rows(src, "threads", people=True)])
    return [{"source": r["source"], "threads": r["count"]}
            for r in sorted(rows, key=lambda r: (-r["count"], str(r["source"])))]


def _failed_jobs(inputs: ReportInputs, top: int = 3) -> dict[str, Any]:
    src, conn = inputs.src, inputs.conn
    jobs = src.table("jobs")
    rows = grouped(conn, src, "jobs", [inputs.span], keys={"error": jobs.c.error},
                   where=[inputs.scope.rows(src, "jobs", people=True), jobs.c.status == "failed"])
    ranked = sorted(rows, key=lambda r: (-r["count"], str(r["error"] or "")))
    return {"errors": [{"error": shorten(r["error"]) or "no message", "count": r["count"]} for r in ranked[:top]],
            "distinct_errors": len(rows)}


def _sign_in_summary(inputs: ReportInputs, addresses: dict[str, Any]) -> dict[str, Any]:
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    ip = src.json_text(events.c["metadata"], "ip")
    rows = grouped(conn, src, "events", [inputs.span], keys={"event_type": events.c.event_type, "ip": ip},
                   where=[inputs.scope.rows(src, "events", people=True),
                          events.c.event_type.in_([SIGN_IN, FAILED_SIGN_IN])])
    reasons = grouped(conn, src, "events", [inputs.span],
                      keys={"reason": src.json_text(events.c["metadata"], "reason")},
                      where=[inputs.scope.rows(src, "events", people=True), events.c.event_type == FAILED_SIGN_IN])
    return {
        "addresses": len({r["ip"] for r in rows if r["event_type"] == SIGN_IN and r["ip"]}),
        "failed_reasons": [{"reason": r["reason"] or "no reason given", "count": r["count"]}
                           for r in sorted(reasons, key=lambda r: (-r["count"], str(r["reason"])))],
        "new_addresses": addresses["new"],
        "unjudged": addresses["unjudged"],
        "link": inputs.list_link("events", [("event_type", f"{SIGN_IN},{FAILED_SIGN_IN}")]
                                 + ([("user_id", inputs.scope.user_ids[0])] if inputs.scope.kind == "user" else []),
                                 scoped=False),
    }


def _action(inputs: ReportInputs, row: Any, people: dict[str, tuple[str, str]], agents: dict[str, str],
            off_hours: bool) -> dict[str, Any]:
    return {
        "section": row.section, "id": row.id, "at": row.at, "event_type": row.kind, "user_id": row.user_id,
        "action": SENSITIVE_EVENT_TYPES.get(row.kind, row.kind),
        "access": row.kind in ACCESS_EVENT_TYPES,
        "actor": people.get(str(row.user_id), (None, None))[0] if row.user_id else None,
        "agent": agents.get(str(row.agent_id)) if row.agent_id else None,
        "description": row.detail, "off_hours": off_hours, "link": inputs.row_link("events", row.id),
    }


def _by_action(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for action in actions:
        if action["section"] == "sensitive_action":
            counts[action["action"]] = counts.get(action["action"], 0) + 1
    return [{"action": a, "count": c} for a, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _per_person(inputs: ReportInputs, thread_rows: list[dict[str, Any]], failed_rows: list[dict[str, Any]],
                event_rows: list[dict[str, Any]], limit: int = 50) -> list[dict[str, Any]]:
    threads = {k: v[0] for k, v in pivot(thread_rows, "user_id", "count", 1 + max((r["p"] for r in thread_rows),
                                                                                 default=0)).items()}
    failed = {k: v[0] for k, v in pivot(failed_rows, "user_id", "count", 1 + max((r["p"] for r in failed_rows),
                                                                                default=0)).items()}
    events: dict[tuple[str, str], int] = {}
    for row in event_rows:
        if row["p"] == 0:
            kind = ("sign_ins" if row["event_type"] == SIGN_IN else "failed_sign_ins"
                    if row["event_type"] == FAILED_SIGN_IN else "sensitive_actions")
            events[(row["user_id"], kind)] = events.get((row["user_id"], kind), 0) + row["count"]
    out: list[dict[str, Any]] = [{"name": p.name, "email": p.email, "role": p.role, "threads": threads.get(p.id, 0),
            "failed_jobs": failed.get(p.id, 0), "sign_ins": events.get((p.id, "sign_ins"), 0),
            "failed_sign_ins": events.get((p.id, "failed_sign_ins"), 0),
            "sensitive_actions": events.get((p.id, "sensitive_actions"), 0),
            "link": inputs.list_link("threads", [("user_id", p.id)], scoped=False)} for p in inputs.scope.people]
    out.sort(key=lambda p: (-(p["sensitive_actions"] * 1000 + p["threads"]), p["name"]))
    return out[:limit]


