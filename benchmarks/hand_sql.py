"""The query an expert would write by hand for each bundled rule (PostgreSQL).

Each returns the firing groups, like the engine's aggregate query; parameters
come from the loaded rule so that the two stay equivalent when a rule is tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cronsim import CronSim

HandSql = Callable[[Any, datetime], tuple[str, dict[str, Any]]]


def failed_job_spike(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    window_start = now - rule.window
    reference_start = window_start - rule.reference_span
    scale = rule.window / rule.reference_span
    sql = """
        SELECT agent_id,
               count(*) FILTER (WHERE created_at > :ws) AS current,
               count(*) FILTER (WHERE created_at <= :ws) AS reference
        FROM jobs
        WHERE status = 'failed' AND created_at > :rs AND created_at <= :now
        GROUP BY agent_id
        HAVING count(*) FILTER (WHERE created_at > :ws) >= :factor * :scale * count(*) FILTER (WHERE created_at <= :ws)
           AND count(*) FILTER (WHERE created_at > :ws) >= :min_current
    """
    return sql, {"ws": window_start, "rs": reference_start, "now": now, "factor": rule.factor,
                 "scale": scale, "min_current": rule.min_current}


def job_error_rate(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    sql = """
        SELECT agent_id, count(*) FILTER (WHERE status = 'failed')::float / count(*) AS ratio
        FROM jobs
        WHERE created_at > :start AND created_at <= :now
        GROUP BY agent_id
        HAVING count(*) >= :min_total
           AND count(*) FILTER (WHERE status = 'failed')::float / count(*) >= :ratio
    """
    return sql, {"start": now - rule.window, "now": now, "min_total": rule.min_total, "ratio": rule.ratio.value}


def cron_not_firing(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    """By hand: each cron's last expected runs computed in Python (cron maths has no
    SQL), then one query counting the cron.fired events of each run; the streak of
    missed runs is read off the per-run counts."""
    due_by = now - rule.grace
    sql = """
        WITH expected(cron_id, expected_at) AS (
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])))
        SELECT e.cron_id, e.expected_at, count(ev.id) AS fired
        FROM expected e
        LEFT JOIN events ev
          ON ev.event_type = 'cron.fired' AND ev.metadata->>'cron_id' = e.cron_id
         AND ev.created_at >= e.expected_at AND ev.created_at <= e.expected_at + :grace
        GROUP BY e.cron_id, e.expected_at
    """
    ids, ats = _recent_runs(due_by, rule.max_runs)
    return sql, {"ids": ids, "ats": ats, "grace": rule.grace}


_CRONS: list[tuple[str, str, str, datetime]] = []


def load_crons(conn: Any) -> None:
    """The crons table, read once (the hand-written version needs it too)."""
    from sqlalchemy import text

    _CRONS[:] = [tuple(r) for r in conn.execute(text(
        "SELECT id, schedule, timezone, created_at FROM crons WHERE enabled ORDER BY id"))]


def _recent_runs(due_by: datetime, limit: int) -> tuple[list[str], list[datetime]]:
    from zoneinfo import ZoneInfo

    ids, ats = [], []
    for cron_id, schedule, tz, created_at in _CRONS:
        start = (due_by.replace(microsecond=0) + timedelta(seconds=1)).astimezone(ZoneInfo(tz))
        for count, run in enumerate(CronSim(schedule, start, reverse=True)):
            if count >= limit or run < created_at:
                break
            ids.append(cron_id)
            ats.append(run)
    return ids, ats


def new_login_ip(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    window_start = now - rule.window
    sql = """
        SELECT w.user_id, w.metadata->>'ip' AS ip, count(*), min(w.created_at)
        FROM events w
        WHERE w.event_type = 'auth.login' AND w.created_at > :ws AND w.created_at <= :now AND w.metadata ? 'ip'
          AND NOT EXISTS (
              SELECT 1 FROM events p
              WHERE p.event_type = 'auth.login' AND p.created_at > :ls AND p.created_at <= :ws
                AND p.user_id = w.user_id AND p.metadata->>'ip' = w.metadata->>'ip')
        GROUP BY w.user_id, w.metadata->>'ip'
    """
    return sql, {"ws": window_start, "ls": window_start - rule.lookback, "now": now}


def provider_error_burst(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    sql = """
        SELECT metadata->>'provider' AS provider, count(*)
        FROM events
        WHERE event_type = 'provider.error' AND metadata->>'status' = '429'
          AND created_at > :start AND created_at <= :now
        GROUP BY metadata->>'provider'
        HAVING count(*) >= :threshold
    """
    return sql, {"start": now - rule.window, "now": now, "threshold": rule.threshold.value}


def sensitive_actions(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    sql = """
        SELECT id, user_id, event_type, severity, description, agent_id, team_id, metadata, created_at,
               count(*) OVER () AS matching
        FROM events
        WHERE event_type = ANY(:types) AND created_at > :start AND created_at <= :now
        ORDER BY created_at, id
        LIMIT :limit
    """
    types = [c.value for c in rule.where if c.column == "event_type"][0]
    return sql, {"types": list(types), "start": now - rule.window, "now": now, "limit": rule.max_groups}


def token_budget(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    sql = """
        SELECT agent_id, sum(input_tokens + output_tokens) AS tokens
        FROM jobs
        WHERE created_at > :start AND created_at <= :now
        GROUP BY agent_id
        HAVING sum(input_tokens + output_tokens) >= :threshold
    """
    return sql, {"start": now - rule.window, "now": now, "threshold": rule.threshold.value}


def token_overrun(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    periods = rule.baseline.periods
    sql = """
        WITH per_day AS (
            SELECT agent_id,
                   floor(extract(epoch FROM (:now - created_at)) / :w) AS bucket,
                   sum(input_tokens + output_tokens) AS tokens
            FROM jobs
            WHERE created_at > :start AND created_at <= :now
            GROUP BY 1, 2
        )
        SELECT agent_id, max(tokens) FILTER (WHERE bucket = 0) AS current,
               avg(tokens) FILTER (WHERE bucket > 0) AS baseline
        FROM per_day
        GROUP BY agent_id
        HAVING max(tokens) FILTER (WHERE bucket = 0) > :factor * avg(tokens) FILTER (WHERE bucket > 0)
    """
    return sql, {"now": now, "start": now - rule.window * (periods + 1), "w": rule.window.total_seconds(),
                 "factor": rule.baseline.factor}


def webhook_silent(rule: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    window_start = now - rule.window
    sql = """
        SELECT agent_id, max(last_activity_at)
        FROM threads
        WHERE source = 'webhook' AND last_activity_at > :ls AND last_activity_at <= :now
        GROUP BY agent_id
        HAVING count(*) FILTER (WHERE last_activity_at > :ws) = 0
    """
    return sql, {"ws": window_start, "ls": window_start - rule.lookback, "now": now}


HAND_SQL: dict[str, HandSql] = {
    "failed-job-spike": failed_job_spike,
    "job-error-rate": job_error_rate,
    "cron-not-firing": cron_not_firing,
    "new-login-ip": new_login_ip,
    "provider-error-burst": provider_error_burst,
    "sensitive-actions": sensitive_actions,
    "token-budget": token_budget,
    "token-overrun": token_overrun,
    "webhook-silent": webhook_silent,
}
