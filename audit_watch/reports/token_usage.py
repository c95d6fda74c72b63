"""Token usage by agent: where the tokens went, against each agent's own history and budget.

For the period: tokens by agent and by job type. Each agent is compared with
the median of its own earlier periods (periods before the data began are left
out, never counted as zero) and with its daily budget, if one is set. An agent
out of line is flagged with the reason and what to check, e.g. "input tokens per
job grew 4.4×: it may be looping over a large context file".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case

from audit_watch.reports.charts import daily_series_png, tokens_by_agent_png
from audit_watch.reports.inputs import ChartSpec, ReportData, ReportInputs, definition_of
from audit_watch.reports.model import TokenUsageDefinition
from audit_watch.reports.periods import Period
from audit_watch.reports.queries import (
    COUNT,
    change,
    counted_if,
    covered,
    data_start,
    grouped,
    lookup_names,
    median,
    ratio,
    summed,
)

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def build(inputs: ReportInputs) -> ReportData:
    options: TokenUsageDefinition = definition_of(inputs, TokenUsageDefinition)
    src, conn, period = inputs.src, inputs.conn, inputs.period
    jobs = src.table("jobs")
    history = period.history(options.history)
    spans = [inputs.span] + [(p.start, p.end) for p in history]
    in_scope = inputs.scope.rows(src, "jobs")
    failed = jobs.c.status == "failed"
    measures = {"jobs": COUNT, "input": summed(jobs.c.input_tokens), "output": summed(jobs.c.output_tokens),
                "failed_jobs": counted_if(failed),
                "failed_input": summed(case((failed, jobs.c.input_tokens), else_=0))}
    rows = grouped(conn, src, "jobs", spans, keys={"agent_id": jobs.c.agent_id}, where=[in_scope], measures=measures)
    usable = covered(spans, data_start(conn, src))
    per_agent: dict[str, list[dict[str, int]]] = {}
    for row in rows:
        per_agent.setdefault(row["agent_id"], [dict.fromkeys(measures, 0) for _ in spans])[row["p"]] = row
    type_rows = grouped(conn, src, "jobs", [inputs.span], keys={"agent_id": jobs.c.agent_id, "job_type": jobs.c.job_type},
                        where=[in_scope], measures=measures)
    buckets = period.buckets()
    daily_rows = grouped(conn, src, "jobs", [(b.start, b.end) for b in buckets], keys={"agent_id": jobs.c.agent_id},
                         where=[in_scope], measures=measures)
    daily: dict[str, list[dict[str, int]]] = {}
    for row in daily_rows:
        daily.setdefault(row["agent_id"], [dict.fromkeys(measures, 0) for _ in buckets])[row["p"]] = row

    names = lookup_names(conn, src, "agents", per_agent)
    budgets, budget_problems = _budgets(options, names)
    totals_now = {m: sum(v[0][m] for v in per_agent.values()) for m in measures}
    totals_before = {m: sum(v[1][m] for v in per_agent.values()) for m in measures} if len(spans) > 1 else None
    grand = totals_now["input"] + totals_now["output"]
    agents = []
    for agent_id, values in per_agent.items():
        current = values[0]
        if not current["jobs"]:
            continue
        baseline = _baseline(values[1:], usable[1:])
        item = _agent_item(inputs, agent_id, names.get(str(agent_id), str(agent_id)), current, values, baseline, grand)
        item["by_type"] = _by_type([r for r in type_rows if r["agent_id"] == agent_id], current)
        item["budget"] = budgets.get(agent_id)
        item.update(_budget_days(item["budget"], daily.get(agent_id), buckets, period.length.total_seconds()))
        item["flags"] = _flags(item, baseline, options, daily.get(agent_id), buckets, period)
        agents.append(item)
    agents.sort(key=lambda a: (-a["total"], a["name"]))
    shown = [a for i, a in enumerate(agents) if i < options.top or a["flags"]]
    flagged = sorted((a for a in agents if a["flags"]),
                     key=lambda a: (min(SEVERITY_RANK[f["severity"]] for f in a["flags"]), -a["total"]))
    context = {
        "totals": {
            "tokens": change(grand, totals_before["input"] + totals_before["output"] if totals_before else None),
            "input": totals_now["input"], "output": totals_now["output"],
            "jobs": change(totals_now["jobs"], totals_before["jobs"] if totals_before else None),
            "agents": len(agents),
        },
        "agents": shown,
        "hidden_agents": len(agents) - len(shown),
        "flagged": [{"name": a["name"], "agent_id": a["agent_id"], "flags": a["flags"], "link": a["link"]}
                    for a in flagged],
        "job_types": _job_types(type_rows, grand),
        "budget_problems": budget_problems,
        "history": {"periods": sum(usable[1:]), "requested": options.history},
        "growth_factor": options.growth_factor,
    }
    charts = _charts(shown[: options.top], daily, buckets) if options.charts and shown else []
    return ReportData(title="Token usage by agent", context=context, charts=charts)


def _baseline(history: list[dict[str, int]], usable: list[bool]) -> dict[str, Any]:
    """Medians over the earlier periods the agent ran in (and the data covers)."""
    periods = [h for h, ok in zip(history, usable) if ok and h["jobs"]]
    return {
        "periods": len(periods),
        "jobs": median([h["jobs"] for h in periods]),
        "total": median([h["input"] + h["output"] for h in periods]),
        "per_job_input": median([h["input"] / h["jobs"] for h in periods]),
        "per_job_output": median([h["output"] / h["jobs"] for h in periods]),
    }


def _agent_item(inputs: ReportInputs, agent_id: str, name: str, current: dict[str, int],
                values: list[dict[str, int]], baseline: dict[str, Any], grand: int) -> dict[str, Any]:
    total = current["input"] + current["output"]
    previous = values[1]["input"] + values[1]["output"] if len(values) > 1 else None
    return {
        "agent_id": agent_id, "name": name, "jobs": current["jobs"], "input": current["input"],
        "output": current["output"], "total": total, "share": total / grand if grand else None,
        "per_job_input": current["input"] / current["jobs"], "per_job_output": current["output"] / current["jobs"],
        "failed_jobs": current["failed_jobs"], "failed_input": current["failed_input"],
        "change": change(total, previous), "baseline": baseline,
        "vs_usual": ratio(total, baseline["total"]),
        "link": inputs.list_link("jobs", [("agent_id", agent_id)]),
    }


def _by_type(rows: list[dict[str, Any]], current: dict[str, int]) -> list[dict[str, Any]]:
    total = current["input"] + current["output"]
    out = [{"job_type": r["job_type"], "jobs": r["jobs"], "tokens": r["input"] + r["output"],
            "per_job": (r["input"] + r["output"]) / r["jobs"] if r["jobs"] else None,
            "share": (r["input"] + r["output"]) / total if total else None} for r in rows]
    return sorted(out, key=lambda t: (-t["tokens"], str(t["job_type"])))


def _job_types(rows: list[dict[str, Any]], grand: int) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, int]] = {}
    for row in rows:
        item = merged.setdefault(row["job_type"], {"jobs": 0, "tokens": 0})
        item["jobs"] += row["jobs"]
        item["tokens"] += row["input"] + row["output"]
    out = [{"job_type": k, **v, "share": v["tokens"] / grand if grand else None} for k, v in merged.items()]
    return sorted(out, key=lambda t: (-t["tokens"], str(t["job_type"])))


def _budgets(options: TokenUsageDefinition, names: dict[str, str]) -> tuple[dict[str, int], list[str]]:
    """Budgets by agent id; keys may be ids or names (case-insensitive)."""
    by_name = {name.lower(): agent_id for agent_id, name in names.items()}
    budgets, problems = {}, []
    for key, budget in options.budgets.items():
        agent_id = key if key in names else by_name.get(key.lower())
        if agent_id is None:
            problems.append(f"The budget for {key!r} matches no agent that ran in the period.")
        else:
            budgets[agent_id] = budget
    return budgets, problems


def _budget_days(budget: int | None, days: list[dict[str, int]] | None, buckets: list[Any],
                 period_seconds: float) -> dict[str, Any]:
    """Days over a daily budget (for periods of two days or less, the period against
    the budget scaled to its length)."""
    out: dict[str, Any] = {"over_budget_days": 0, "budget_days": 0, "peak_day": None}
    if not days:
        return out
    tokens = [d["input"] + d["output"] for d in days]
    daily_buckets = (buckets[0].end - buckets[0].start).total_seconds() > 3600 if buckets else False
    if daily_buckets:
        peak = max(range(len(tokens)), key=lambda i: (tokens[i], -i))
        out["peak_day"] = {"label": buckets[peak].label, "tokens": tokens[peak]}
    if budget is None:
        return out
    if daily_buckets:
        out["budget_days"] = len(tokens)
        out["over_budget_days"] = sum(1 for t in tokens if t > budget)
    else:
        out["budget_days"] = 1
        out["over_budget_days"] = int(sum(tokens) > budget * period_seconds / 86400)
    return out


def _flags(item: dict[str, Any], baseline: dict[str, Any], options: TokenUsageDefinition,
           days: list[dict[str, int]] | None, buckets: list[Any], period: Period) -> list[dict[str, str]]:
    flags: list[dict[str, str]] = []
    factor = options.growth_factor
    if item["budget"] and item["over_budget_days"]:
        flags.append({"severity": "critical", "reason": (
            f"over its budget of {item['budget']:,} tokens a day on {item['over_budget_days']} of "
            f"{item['budget_days']} day(s)" + (f" (peak {item['peak_day']['tokens']:,} on {item['peak_day']['label']})"
                                                if item["peak_day"] else "")),
            "check": "whether the budget still fits its job; if it does, the reasons below or its biggest jobs"})
    if item["jobs"] < options.min_jobs:
        return flags
    if baseline["periods"] == 0:
        flags.append({"severity": "info", "reason": "no earlier period to compare with (a new agent, or new data)",
                      "check": "that its volume is what you expect for its job"})
        return flags
    grew = ratio(item["per_job_input"], baseline["per_job_input"])
    if grew is not None and grew >= factor:
        onset = _onset(days, buckets, baseline["per_job_input"] * factor)
        since = ""
        if onset is not None and days:
            recent = days[onset:]
            recent_jobs = sum(d["jobs"] for d in recent)
            recent_ratio = sum(d["input"] for d in recent) / recent_jobs / baseline["per_job_input"]
            since = f"; {recent_ratio:.1f}× since {period.local(buckets[onset].start):%a %d %b %H:%M}"
        flags.append({"severity": "warning", "reason": (
            f"input tokens per job grew {grew:.1f}× ({item['per_job_input']:,.0f} against a usual "
            f"{baseline['per_job_input']:,.0f}){since}: it may be looping over a "
            "large context file or re-sending a growing conversation"),
            "check": "its context files and retrieval settings, and whether each run re-reads the same large file; "
                     "trim what it loads into the prompt"})
    runs = ratio(item["jobs"], baseline["jobs"])
    if runs is not None and runs >= factor:
        flags.append({"severity": "warning", "reason": (
            f"it ran {runs:.1f}× as many jobs as usual ({item['jobs']:,} against {baseline['jobs']:,.0f})"),
            "check": "what triggers it (crons, webhooks, integrations) for a loop, duplicates or a retry storm"})
    longer = ratio(item["per_job_output"], baseline["per_job_output"])
    if longer is not None and longer >= factor:
        flags.append({"severity": "warning", "reason": (
            f"output tokens per job grew {longer:.1f}× ({item['per_job_output']:,.0f} against "
            f"{baseline['per_job_output']:,.0f}): its answers got longer"),
            "check": "recent edits to its system prompt and its maximum output length"})
    if item["input"] and item["failed_input"] / item["input"] >= options.failed_share:
        flags.append({"severity": "warning", "reason": (
            f"{item['failed_input'] / item['input']:.0%} of its input tokens went to jobs that failed "
            f"({item['failed_jobs']:,} failed jobs)"),
            "check": "the errors of its failed jobs: the tokens were spent without a result"})
    return flags


def _onset(days: list[dict[str, int]] | None, buckets: list[Any], threshold: float) -> int | None:
    """The bucket where the last run of buckets with input per job above ``threshold``
    begins (None when it covers the whole period or the last bucket is not above)."""
    if not days:
        return None
    above = [d["jobs"] > 0 and d["input"] / d["jobs"] >= threshold for d in days]
    if not above or not above[-1]:
        return None
    index = len(above) - 1
    while index > 0 and (above[index - 1] or days[index - 1]["jobs"] == 0):
        index -= 1
    return index if index > 0 else None


def _charts(agents: list[dict[str, Any]], daily: dict[str, list[dict[str, int]]], buckets: list[Any]) -> list[ChartSpec]:
    names = [a["name"] for a in agents]
    ins, outs = [a["input"] for a in agents], [a["output"] for a in agents]
    charts = [ChartSpec("tokens-by-agent", "Tokens by agent",
                        "Tokens by agent: " + ", ".join(f"{a['name']} {a['total']:,}" for a in agents),
                        lambda: tokens_by_agent_png(names, ins, outs))]
    top = agents[:5]
    labels = [b.label for b in buckets]
    series = {a["name"]: [d["input"] + d["output"] for d in daily.get(a["agent_id"], [])] or [0] * len(buckets)
              for a in top}
    charts.append(ChartSpec("tokens-per-day", "Tokens per day, top agents",
                            "Tokens per day for " + ", ".join(a["name"] for a in top),
                            lambda: daily_series_png(labels, series, "tokens")))
    return charts
