"""Background work of the agents: threads and their jobs, hour by hour.

Per agent and hour the generator draws how many threads start (the team's
working day and week, a per-day factor, a little jitter; never fewer than an
intake agent's minimum), lays their jobs out in time, then marks a steady
share as failed (stochastic rounding, not a Poisson draw, so that the background
never bursts) and samples chat replies for the evaluator.

Everything per row is an index into a precomputed table or an integer; times
are Unix seconds until ``TimeText`` formats them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from audit_watch.demo.seed.incidents import Plan
from audit_watch.demo.seed.rows import TimeText, to_json
from audit_watch.demo.seed.text import TextPool
from audit_watch.demo.seed.world import (
    FLAT_SHAPE,
    WEEKDAY_SHAPE,
    WEEKEND_FACTOR,
    Agent,
    World,
)

# (message, keeps the input tokens, weight); {p} is the provider.
ERRORS = (
    ("Provider over quota: {p} returned 429 insufficient_quota", False, 25),
    ("Credential expired: the {p} API key was rejected (401 Unauthorized)", False, 10),
    ("Tool returned an error: http_request got 502 Bad Gateway from the CRM API", True, 35),
    ("Model timed out after 60 s without a response", True, 30),
)
# Incident Scribe ran on a provider deleted 21 days ago: those jobs keep no provider.
RETIRED = {"scribe": ("local-llama", "mixtral-8x7b", 21 * 86400)}
TABLE = 20                                # size of the precomputed choice tables
TURNS = (1, 2, 2, 2, 3, 3, 3, 4)          # replies in a conversation (picked by index)


def _table(weighted: tuple[tuple[object, float], ...]) -> list:
    """A list of TABLE entries in proportion to the weights (picked by index)."""
    total = sum(w for _, w in weighted)
    out: list = []
    for value, weight in weighted:
        out.extend([value] * round(TABLE * weight / total))
    while len(out) < TABLE:
        out.append(weighted[0][0])
    return out[:TABLE]


@dataclass
class _Agent:
    spec: Agent
    id: str
    team_id: str
    members: list[str]
    sources: list[str]
    models: list[tuple[str, str | None]]     # (model, provider); None: a deleted provider
    pairs: tuple[tuple[str, str], ...]
    names: tuple[str, ...]
    per_hour: list[float]                 # expected threads (or jobs) per hour, scale applied


class Background:
    """Rows of threads, jobs and evaluation events, hour by hour."""

    def __init__(self, world: World, rng: random.Random, texts: dict[str, TextPool], *,
                 start: int, end: int, scale: float, plan: Plan, fmt: TimeText,
                 make_id: Callable[[int], str]) -> None:
        self.rng, self.start, self.end, self.scale = rng, start, end, scale
        self.plan, self.fmt, self.make_id = plan, fmt, make_id
        self.world = world
        self.hours = (end - start + 3599) // 3600
        members: dict[str, list[str]] = {}
        for user in world.users.values():
            for team in user.teams:
                members.setdefault(team, []).append(user.id)
        local = {key: self._local_hours(team.tz) for key, team in world.teams.items()}
        self.agents: dict[str, _Agent] = {}
        for key, spec in world.agents.items():
            pool = texts[spec.texts]
            self.agents[key] = _Agent(
                spec, spec.id, world.teams[spec.team].id, members[spec.team],
                _table(spec.sources) if spec.sources else [],
                _table(tuple(((m, p), w) for m, p, w in spec.models)),
                pool.pairs, pool.names, self._per_hour(spec, local[spec.team]))
        error_table = _table(tuple(((m, keep), w) for m, keep, w in ERRORS))
        self.errors = {p: [(m.format(p=p or "together"), keep) for m, keep in error_table]
                       for p in ("openai", "anthropic", "ollama", None)}   # None: since deleted
        # agents whose failures must not dent their token totals fail after the read
        keeping = [(m, keep) for m, keep in error_table if keep]
        self.keeping_errors = {p: [keeping[i % len(keeping)] for i in range(TABLE)]
                               for p in self.errors}

    # -- volume --------------------------------------------------------------
    def _local_hours(self, tz: str) -> list[tuple[int, bool, object]]:
        zone = ZoneInfo(tz)
        out: list[tuple[int, bool, object]] = []
        for i in range(self.hours):
            t = datetime.fromtimestamp(self.start + 3600 * i, zone)
            out.append((t.hour, t.weekday() >= 5, t.date()))
        return out

    def _per_hour(self, spec: Agent, local: list[tuple[int, bool, object]]) -> list[float]:
        if spec.pattern == "interactive":
            norm = spec.threads_per_day * self.scale / sum(WEEKDAY_SHAPE)
            day_factor: dict[object, float] = {}
            out = []
            for hour, weekend, day in local:
                if day not in day_factor:
                    day_factor[day] = self.rng.uniform(0.95, 1.05)
                out.append(norm * WEEKDAY_SHAPE[hour] * (WEEKEND_FACTOR if weekend else 1.0)
                           * day_factor[day])
            return out
        if spec.pattern == "flat":
            return [spec.threads_per_hour * self.scale * FLAT_SHAPE[hour] for hour, _, _ in local]
        return [0.0] * len(local)

    def hour(self, i: int, jobs: list, threads: list, events: list) -> None:
        """Append the background rows that start in hour ``i`` of the data."""
        h0 = self.start + 3600 * i
        rng_random = self.rng.random
        for a in self.agents.values():
            pattern = a.spec.pattern
            if pattern == "tasks":
                self._tasks(a, h0, jobs, events)
            elif pattern in ("interactive", "flat"):
                n = int(a.per_hour[i] * (0.85 + 0.3 * rng_random()) + rng_random())
                n = max(n, a.spec.min_per_hour)
                if n:
                    self._threads(a, h0, n, jobs, threads, events)

    # -- rows ----------------------------------------------------------------
    def _threads(self, a: _Agent, h0: int, n: int, jobs: list, threads: list, events: list) -> None:
        rnd = self.rng.random
        make_id, fmt = self.make_id, self.fmt
        end = self.end
        plan_stop = self.plan.source_stop
        specs: list[tuple] = []          # (created, thread_id, user_id, job_type, pair)
        pairs, names, sources, members = a.pairs, a.names, a.sources, a.members
        n_pairs, n_names, n_members = len(pairs), len(names), len(members)
        for _ in range(n):
            created = h0 + 1 + int(rnd() * 3598)
            source = sources[int(rnd() * TABLE)]
            stop = plan_stop.get((a.spec.key, source), end)
            if created >= stop:
                continue
            webhook = source == "webhook"
            user = None if webhook else members[int(rnd() * n_members)]
            turns = 1 if webhook else TURNS[int(rnd() * 8)]
            tools = 1 if rnd() < (0.5 if webhook else 0.35) else 0
            tid = make_id(created)
            t = created
            pair = pairs[int(rnd() * n_pairs)]
            for k in range(turns + tools):
                if t >= stop - 40:
                    break
                kind = "tool_call" if k == 1 and tools else "chat_reply"
                specs.append((t, tid, user, kind, pair))
                t += 8 + int(rnd() * (40 if webhook else 200))
                if k < turns - 1:
                    pair = pairs[int(rnd() * n_pairs)]
            last = min(t, stop - 1)
            threads.append((tid, source, "chat", a.id, a.team_id, user, None,
                            names[int(rnd() * n_names)], 2 * turns, pair[1][:30],
                            fmt(created), fmt(last)))
        self._jobs(a, specs, jobs, events)

    def _tasks(self, a: _Agent, h0: int, jobs: list, events: list) -> None:
        rate = round(a.spec.jobs_per_hour * self.scale * 1000)
        k = h0 // 3600
        n = (k + 1) * rate // 1000 - k * rate // 1000
        rnd = self.rng.random
        pairs = a.pairs
        specs = [(h0 + 1 + int(rnd() * 3598), None, None, "task", pairs[int(rnd() * len(pairs))])
                 for _ in range(n)]
        specs.sort(key=lambda s: s[0])
        self._jobs(a, specs, jobs, events)

    def cron_run(self, a: _Agent, cron_id: str, name: str, fired: int,
                 pair: tuple[str, str], jobs: list, threads: list, events: list) -> None:
        rnd = self.rng.random
        created = fired + 1 + int(rnd() * 4)
        tid = self.make_id(created)
        steps = 3 if a.spec.pattern == "cron" else 2
        specs = []
        t = created
        for k in range(steps):
            if t >= self.end - 40:
                break
            specs.append((t, tid, None, "tool_call" if k == 1 else "task", pair))
            t += 20 + int(rnd() * 60)
        threads.append((tid, "cron", "cron", a.id, a.team_id, None, cron_id, name, 2,
                        pair[1][:30], self.fmt(created), self.fmt(min(t, self.end - 1))))
        self._jobs(a, specs, jobs, events, fail=False)

    def _jobs(self, a: _Agent, specs: list[tuple], jobs: list, events: list,
              fail: bool = True) -> None:
        """Turn job specs into rows: models, tokens, failures, evaluations."""
        if not specs:
            return
        rnd = self.rng.random
        make_id, fmt, end = self.make_id, self.fmt, self.end
        spec = a.spec
        n = len(specs)
        failed: set[int] = set()
        if fail and spec.fail_rate:
            f = int(n * spec.fail_rate + rnd())
            if f:
                failed = set(self.rng.sample(range(n), f))
        # now and then a person cancels one (1-based index; 0: none)
        cancelled = self.rng.randrange(n) + 1 if fail and rnd() < n * 0.003 else 0
        window = self.plan.fail_window.get(spec.key)
        boost_from, boost = self.plan.token_boost.get(spec.key, (end, 1.0))
        retired_model, old_model, age = RETIRED.get(spec.key, ("", "", 0))
        retired_until = end - age
        models = a.models
        errors = self.keeping_errors if spec.fail_keeps_input else self.errors
        base_in, base_out = spec.input_tokens, spec.output_tokens
        lo, width = 1.0 - spec.token_spread, 2.0 * spec.token_spread
        eval_rate = spec.eval_rate
        agent_id, team_id = a.id, a.team_id
        append = jobs.append
        for i, (created, tid, user, job_type, (prompt, response)) in enumerate(specs):
            started = created + int(rnd() * 3)
            finished = started + 2 + int(rnd() * 25)
            model, provider = models[int(rnd() * TABLE)]
            if model == retired_model and created < retired_until:
                model, provider = old_model, None
            tokens_in = int(base_in * (lo + width * rnd()))
            if created >= boost_from:
                tokens_in = int(tokens_in * boost)
            tokens_out = int(base_out * (lo + width * rnd()))
            status, error, evaluator = "complete", None, None
            if window and window[0] <= created < window[1]:
                status, error, tokens_in, tokens_out, response = "failed", window[2], 0, 0, None
            elif i in failed:
                error, keep = errors[provider][int(rnd() * TABLE)]
                status, tokens_out, response = "failed", 0, None
                if not keep:
                    tokens_in = 0
                finished = started + (60 if error.startswith("Model timed out") else 1)
            elif i + 1 == cancelled:
                status, tokens_out, response = "cancelled", 0, None
            elif eval_rate and job_type == "chat_reply" and rnd() < eval_rate:
                r = rnd()
                evaluator = "passed" if r < 0.94 else "failed" if r < 0.98 else "skipped"
            if finished >= end:
                if started >= end:
                    status, started = "queued", None
                else:
                    status = "running"
                finished, response, tokens_out, evaluator = None, None, 0, None
            jid = make_id(created)
            append((jid, status, agent_id, team_id, user, tid, job_type, model, provider,
                    tokens_in, tokens_out, evaluator, error, prompt, response, fmt(created),
                    None if started is None else fmt(started),
                    None if finished is None else fmt(finished)))
            if evaluator is not None and evaluator != "skipped":
                at = finished + 2 + int(rnd() * 20)
                if at < end:
                    passed = evaluator == "passed"
                    score = round(0.72 + 0.27 * rnd(), 2) if passed else round(0.2 + 0.4 * rnd(), 2)
                    events.append((make_id(at), "agent.evaluation", "info" if passed else "warning",
                                   f"Evaluator {'passed' if passed else 'failed'} a reply of "
                                   f"{spec.name} (score {score})",
                                   agent_id, None, team_id,
                                   to_json({"job_id": jid, "score": score, "passed": passed}),
                                   fmt(at)))

    def spike_retries(self, jobs: list) -> None:
        """The failing agent's extra retried calls inside its failure window."""
        for key, (start, stop, error, extra) in self.plan.fail_window.items():
            a = self.agents[key]
            rnd = self.rng.random
            start, stop = max(start, self.start), min(stop, self.end)
            if start >= stop:
                continue
            for _ in range(extra):
                created = start + int(rnd() * (stop - start))
                model, provider = a.models[int(rnd() * TABLE)]
                prompt = a.pairs[int(rnd() * len(a.pairs))][0]
                jobs.append((self.make_id(created), "failed", a.id, a.team_id, None, None, "task",
                             model, provider, 0, 0, None, error, prompt, None,
                             self.fmt(created), self.fmt(created + 1), self.fmt(created + 2)))
