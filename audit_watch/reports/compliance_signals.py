"""What looks unusual in a compliance summary, measured against the subject's own history.

- Off hours: the share of their actions outside working hours, against the
  same share in their earlier periods (a support agent in another time zone is
  always "off hours"; a jump is what matters). Sensitive actions outside working
  hours are always reported.
- Spikes: a count at least ``spike_factor`` × its median over earlier periods.
- New addresses: a sign-in from an address the person had not used in the
  lookback before. An address is only judged once the person's sign-in history
  reaches ``MIN_HISTORY`` back (otherwise every address looks new at the start
  of the data).
- Sensitive actions soon after a sign-in from a new address.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from audit_watch.reports.compliance_evidence import FAILED_SIGN_IN, SIGN_IN, acted_types
from audit_watch.reports.inputs import ReportInputs
from audit_watch.reports.model import ComplianceDefinition
from audit_watch.reports.periods import Period, off_hours_spans
from audit_watch.reports.queries import COUNT, SENSITIVE_EVENT_TYPES, earliest, grouped, median, totals

METRICS = ("threads", "failed_jobs", "sign_ins", "failed_sign_ins", "sensitive_actions")
# Below these counts a "spike" is noise, whatever the ratio.
SPIKE_MINIMUM = {"threads": 20, "failed_jobs": 5, "sign_ins": 10, "failed_sign_ins": 3, "sensitive_actions": 3}
METRIC_WORDS = {"threads": "threads", "failed_jobs": "failed jobs", "sign_ins": "sign-ins",
                "failed_sign_ins": "failed sign-ins", "sensitive_actions": "sensitive actions"}
ACTION_METRICS = ("threads", "sign_ins", "failed_sign_ins", "sensitive_actions")
CORRELATION_WINDOW = timedelta(hours=2)
MIN_HISTORY = timedelta(days=7)
MIN_OFF_HOURS = 10


def off_hours(inputs: ReportInputs, options: ComplianceDefinition, periods: Sequence[Period],
              series: dict[str, list[int]], usable: Sequence[bool]) -> dict[str, Any]:
    """Actions (threads, sign-ins, failed sign-ins, sensitive actions) outside working
    hours in each period, counted in SQL over the off-hours spans of every period."""
    src, conn = inputs.src, inputs.conn
    spans, owner = [], []
    for index, period in enumerate(periods):
        if index == 0 or usable[index]:
            for bucket in off_hours_spans(period, *options.hours, options.weekdays):
                spans.append((bucket.start, bucket.end))
                owner.append(index)
    per_period = {metric: [0] * len(periods) for metric in ACTION_METRICS}
    if spans:
        events = src.table("events")
        people = {name: inputs.scope.rows(src, name, people=True) for name in ("threads", "events")}
        for row in grouped(conn, src, "threads", spans, where=[people["threads"]]):
            per_period["threads"][owner[row["p"]]] += row["count"]
        for row in grouped(conn, src, "events", spans, keys={"event_type": events.c.event_type},
                           where=[people["events"], events.c.event_type.in_(acted_types())]):
            metric = ("sign_ins" if row["event_type"] == SIGN_IN else
                      "failed_sign_ins" if row["event_type"] == FAILED_SIGN_IN else "sensitive_actions")
            per_period[metric][owner[row["p"]]] += row["count"]
    actions = [sum(series[m][i] for m in ACTION_METRICS) for i in range(len(periods))]
    outside = [sum(per_period[m][i] for m in ACTION_METRICS) for i in range(len(periods))]
    shares = [o / a for o, a, ok in zip(outside[1:], actions[1:], usable[1:]) if ok and a]
    return {
        **{metric: per_period[metric][0] for metric in ACTION_METRICS},
        "total": outside[0],
        "actions": actions[0],
        "share": outside[0] / actions[0] if actions[0] else None,
        "usual_share": median(shares),
        "compared_periods": len(shares),
    }


def new_addresses(inputs: ReportInputs, lookback: timedelta) -> dict[str, Any]:
    """Addresses first used in the period that the person had not used in the lookback
    before it: ``new`` where the person's sign-in history reaches ``MIN_HISTORY``
    back, ``unjudged`` where it does not."""
    src, conn = inputs.src, inputs.conn
    events = src.table("events")
    ip = src.json_text(events.c["metadata"], "ip")
    where = [inputs.scope.rows(src, "events", people=True), events.c.event_type == SIGN_IN]
    lookback_start = inputs.period.start - lookback
    current = grouped(conn, src, "events", [inputs.span], keys={"user_id": events.c.user_id, "ip": ip}, where=where,
                      measures={"count": COUNT, "first": earliest(src, events.c.created_at)})
    before = grouped(conn, src, "events", [(lookback_start, inputs.period.start)],
                     keys={"user_id": events.c.user_id, "ip": ip}, where=where)
    history = grouped(conn, src, "events", [(lookback_start, inputs.period.end)], keys={"user_id": events.c.user_id},
                      where=where, measures={"first": earliest(src, events.c.created_at)})
    seen = {(r["user_id"], r["ip"]) for r in before}
    first_sign_in = {r["user_id"]: r["first"] for r in history}
    names = {p.id: p.name for p in inputs.scope.people}
    new: list[dict[str, Any]] = []
    unjudged: list[dict[str, Any]] = []
    for row in current:
        if not row["ip"] or (row["user_id"], row["ip"]) in seen:
            continue
        item = {"user_id": row["user_id"], "person": names.get(row["user_id"], row["user_id"]), "ip": row["ip"],
                "first": row["first"], "count": row["count"],
                "link": inputs.list_link("events", [("event_type", SIGN_IN), ("user_id", row["user_id"]),
                                                    ("metadata.ip", row["ip"])], scoped=False)}
        judged = first_sign_in.get(row["user_id"]) is not None and \
            first_sign_in[row["user_id"]] <= row["first"] - MIN_HISTORY
        (new if judged else unjudged).append(item)
    new.sort(key=lambda n: (n["first"], n["ip"]))
    unjudged.sort(key=lambda n: (n["first"], n["ip"]))
    return {"new": new, "unjudged": unjudged}


def findings(options: ComplianceDefinition, period: Period, series: dict[str, list[int]], usable: Sequence[bool],
             outside: dict[str, Any], new_ips: list[dict[str, Any]], actions: list[dict[str, Any]],
             counts: dict[str, int]) -> list[dict[str, str]]:
    """What looks unusual, most serious first, as sentences (the template adds the links)."""
    out: list[dict[str, str]] = []
    for address in new_ips:
        after = [a for a in actions if a["user_id"] == address["user_id"]
                 and address["first"] <= a["at"] <= address["first"] + CORRELATION_WINDOW]
        if after:
            out.append({"severity": "critical", "text": (
                f"{len(after)} of {address['person']}'s sensitive actions came within "
                f"{int(CORRELATION_WINDOW.total_seconds() // 3600)} hours of their first sign-in from "
                f"{address['ip']}, an address not used by them in the {options.new_ip_lookback.days} days before.")})
        else:
            out.append({"severity": "warning", "text": (
                f"{address['person']} signed in from a new address, {address['ip']} "
                f"({address['count']} time{'s' if address['count'] != 1 else ''}, first at "
                f"{period.local(address['first']):%a %d %b %H:%M} {period.timezone}).")})
    off_sensitive = [a for a in actions if a["off_hours"]]
    if off_sensitive:
        out.append({"severity": "warning", "text": (
            f"{len(off_sensitive)} sensitive action{'s' if len(off_sensitive) != 1 else ''} happened outside "
            f"working hours ({options.working_hours}).")})
    share, usual = outside["share"], outside["usual_share"]
    if share is not None and usual is not None and outside["total"] >= MIN_OFF_HOURS \
            and share >= 2 * max(usual, 0.02):
        out.append({"severity": "warning", "text": (
            f"{share:.0%} of their actions fell outside working hours, against a usual {usual:.0%}.")})
    history = {m: [v for v, ok in zip(series[m][1:], usable[1:]) if ok] for m in METRICS}
    for metric in METRICS:
        values, current = history[metric], series[metric][0]
        usual_count = median(values)
        if len(values) >= 2 and usual_count is not None and current >= SPIKE_MINIMUM[metric] \
                and current >= options.spike_factor * max(usual_count, 1.0):
            out.append({"severity": "warning", "text": (
                f"{current} {METRIC_WORDS[metric]}: {current / max(usual_count, 1.0):.1f}× their usual "
                f"{usual_count:g} (median of the {len(values)} periods before).")})
    if counts["failed_sign_ins"] >= 3 and counts["failed_sign_ins"] > counts["sign_ins"]:
        out.append({"severity": "warning", "text": (
            f"More failed sign-ins ({counts['failed_sign_ins']}) than successful ones ({counts['sign_ins']}).")})
    rank = {"critical": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: rank[f["severity"]])


def metric_series(thread_rows: list[dict[str, Any]], failed_rows: list[dict[str, Any]],
                  event_rows: list[dict[str, Any]], periods: int) -> dict[str, list[int]]:
    """{metric: [count in period 0 (the report's), 1, 2, ...]}."""
    return {
        "threads": totals(thread_rows, "count", periods),
        "failed_jobs": totals(failed_rows, "count", periods),
        "sign_ins": totals([r for r in event_rows if r["event_type"] == SIGN_IN], "count", periods),
        "failed_sign_ins": totals([r for r in event_rows if r["event_type"] == FAILED_SIGN_IN], "count", periods),
        "sensitive_actions": totals([r for r in event_rows if r["event_type"] in SENSITIVE_EVENT_TYPES],
                                    "count", periods),
    }
