"""Each stage of processing and delivery on its own (``process`` and ``deliver_due`` as a
whole: test_pipeline). The stages that touch the state database run on both backends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from audit_watch.alerting.notify import FIRING, REPEAT, RESOLVED, Planned, decide
from audit_watch.alerting.outbox import Claimed, DeliveryPolicy, enqueue, payload_of
from audit_watch.alerting.senders import Senders, by_channel
from audit_watch.alerting.stages import (
    enqueue_notification,
    failed,
    fallback_payload,
    message_context,
    plan_notifications,
    render,
    root_entries,
    stale,
    store_step,
    transitions,
)
from audit_watch.alerting.state import (
    AlertState,
    StateStore,
    load_states,
    set_thread_root,
    states_by_fingerprint,
    thread_roots,
)
from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.render import Renderer
from audit_watch.config.model import Config
from audit_watch.rules.alert import Alert
from audit_watch.rules.model import RuleBase

from test_state import T0, evaluation, make_alert, make_rule, state, state_url

MIN = timedelta(minutes=1)
POLICY = DeliveryPolicy()
CONFIG = Config.model_validate({"channels": {
    "oncall": {"type": "slack", "token": "xoxb-test", "channel": "#ops"},
    "hook": {"type": "slack_webhook", "url": "https://hooks.slack.test/T/B/x"},
    "mail": {"type": "email", "host": "127.0.0.1", "from": "aw@example.com", "to": ["ops@example.com"]},
    "archive": {"type": "file", "path": "out"},
}})
RULE = make_rule(notify=["oncall", "hook", "mail", "archive"])


def firing_state(alert: Alert, state: str = "firing", **fields: Any) -> AlertState:
    values: dict[str, Any] = dict(
        fingerprint=alert.fingerprint, rule=alert.rule, group=alert.group, group_label=alert.group_label,
        state=state, started_at=T0, last_seen_at=T0, last_evaluated_at=T0, fired_at=T0,
        alert={**alert.to_json(), "group_label": alert.group_label}, last_notified_at=T0,
    )
    values.update(fields)
    return AlertState(**values)


def step_at(rule: RuleBase, prior: dict[str, AlertState], now: Any, *alerts: Alert) -> Any:
    return decide(rule, prior, list(alerts), now, [])


# --- admission ------------------------------------------------------------------------------


def test_failed_names_the_error_and_lets_a_good_evaluation_pass() -> None:
    assert failed(evaluation(RULE, T0, make_alert())) is None
    assert failed(evaluation(RULE, T0, error="OperationalError: locked")) == "evaluation failed: OperationalError: locked"


def test_stale_refuses_only_an_evaluation_older_than_the_states() -> None:
    prior = {"fp": firing_state(make_alert(), last_evaluated_at=T0)}
    assert stale(evaluation(RULE, T0), {}) is None
    assert stale(evaluation(RULE, T0), prior) is None                # the same moment again: not stale
    assert stale(evaluation(RULE, T0 + MIN), prior) is None
    why = stale(evaluation(RULE, T0 - MIN), prior)
    assert why == f"stale: evaluated at {(T0 - MIN).isoformat()}, state already at {T0.isoformat()}"


# --- the states -----------------------------------------------------------------------------


def test_transitions_count_what_changed_state_and_what_cleared() -> None:
    rule = make_rule(**{"for": "5m"})
    pending, firing, gone = make_alert("a1"), make_alert("a2", "Billing"), make_alert("a3", "Gone")
    prior = {
        firing.fingerprint: firing_state(firing, "pending", fired_at=None, last_notified_at=None),
        gone.fingerprint: firing_state(gone, "pending", fired_at=None, last_notified_at=None),
    }
    step = step_at(rule, prior, T0 + 5 * MIN, pending, firing)     # a1 new, a2 held 5m, a3 cleared
    assert transitions(prior, step) == {"pending": 1, "firing": 1, "cleared": 1}
    again = {s.fingerprint: s for s in step.changed}
    assert transitions(again, step_at(rule, again, T0 + 6 * MIN, pending, firing)) == {"cleared": 0}


def test_store_step_writes_the_states_and_a_new_episode_leaves_its_old_thread(state: StateStore) -> None:
    alert = make_alert()
    with state.write() as conn:
        set_thread_root(conn, [alert.fingerprint], "oncall", 41)      # the root of an earlier episode
        step = step_at(RULE, {}, T0, alert)
        store_step(conn, {}, step)
    with state.read() as conn:
        [stored] = load_states(conn, RULE.name).values()
        assert (stored.state, stored.fired_at, stored.episode) == ("firing", T0, 1)
        assert thread_roots(conn, [alert.fingerprint]) == {}


def test_store_step_updates_what_existed_and_deletes_what_cleared(state: StateStore) -> None:
    rule = make_rule(**{"for": "5m"})
    kept, gone = make_alert("a1"), make_alert("a2", "Gone")
    with state.write() as conn:
        store_step(conn, {}, step_at(rule, {}, T0, kept, gone))
    with state.write() as conn:
        prior = load_states(conn, rule.name)
        store_step(conn, prior, step_at(rule, prior, T0 + 5 * MIN, kept))
    with state.read() as conn:
        assert {fp: s.state for fp, s in load_states(conn, rule.name).items()} == {kept.fingerprint: "firing"}


# --- planning -------------------------------------------------------------------------------


def test_plan_threads_repeats_under_their_root_only_on_channels_that_thread(state: StateStore) -> None:
    alert = make_alert()
    prior = {alert.fingerprint: firing_state(alert)}
    step = step_at(make_rule(repeat="1h"), prior, T0 + 61 * MIN, alert)
    with state.write() as conn:
        set_thread_root(conn, [alert.fingerprint], "oncall", 7)
        set_thread_root(conn, [alert.fingerprint], "mail", 8)
        set_thread_root(conn, [alert.fingerprint], "archive", 9)      # a file has no threads: ignored
        planned = plan_notifications(conn, RULE, step.events, CONFIG.channels)
    assert [(p.channel, p.kind, p.parent_id) for p in planned] == [
        ("oncall", REPEAT, 7), ("hook", REPEAT, None), ("mail", REPEAT, 8), ("archive", REPEAT, None),
    ]


# --- rendering ------------------------------------------------------------------------------


def planned(kind: str, channel: str, *alerts: Alert, parent: int | None = None, states: str = "firing") -> Planned:
    from audit_watch.alerting.notify import Change

    changes = [Change(kind, firing_state(a, states, resolved_at=T0 + MIN if states == "resolved" else None), a)
               for a in alerts]
    return Planned(RULE, channel, kind, changes, parent)


def test_render_gives_each_channel_its_payload(state: StateStore) -> None:
    alert = make_alert()
    with state.write() as conn:
        slack = render(conn, planned(FIRING, "oncall", alert), CONFIG.channels["oncall"], Renderer(), T0)
        mail = render(conn, planned(FIRING, "mail", alert), CONFIG.channels["mail"], Renderer(), T0)
    assert slack["title"] == mail["title"] == "failed-jobs: 1 alert firing"
    assert "blocks" in slack and "subject" not in slack
    assert mail["subject"] == "[audit-watch] [WARNING] failed-jobs: 1 alert firing: Support Triage"
    assert "blocks" not in mail


def test_a_resolution_updates_the_root_only_on_a_channel_that_updates(state: StateStore) -> None:
    first, second = make_alert("a1"), make_alert("a2", "Billing")
    with state.write() as conn:
        store_step(conn, {}, step_at(RULE, {}, T0, first, second))
        root = enqueue(conn, channel="oncall", kind=FIRING, rule=RULE.name,
                       fingerprints=[first.fingerprint, second.fingerprint], now=T0, policy=POLICY,
                       payload={"alerts": [first.to_json(), second.to_json()]})
        set_thread_root(conn, [first.fingerprint, second.fingerprint], "oncall", root)
        prior = load_states(conn, RULE.name)
        step = step_at(RULE, prior, T0 + MIN, second)                   # the first resolves, the second fires on
        store_step(conn, prior, step)
        resolved = [c for c in step.events if c.kind == RESOLVED]
        on_slack = Planned(RULE, "oncall", RESOLVED, resolved, root)
        slack = render(conn, on_slack, CONFIG.channels["oncall"], Renderer(), T0 + MIN)
        mail = render(conn, Planned(RULE, "mail", RESOLVED, resolved, root), CONFIG.channels["mail"], Renderer(),
                      T0 + MIN)
    assert slack["blocks"][0]["text"]["text"].startswith("✅ Resolved: failed-jobs")
    assert slack["update"]["blocks"][0]["text"]["text"].endswith("failed-jobs: 1 of 2 resolved")
    assert "update" not in mail


def test_root_entries_say_what_still_fires_under_that_root(state: StateStore) -> None:
    firing, resolved, refired, forgotten = (make_alert(a, a.upper()) for a in ("a1", "a2", "a3", "a4"))
    alerts = [firing, resolved, refired, forgotten]
    with state.write() as conn:
        store_step(conn, {}, step_at(RULE, {}, T0, firing, resolved, refired))
        prior = {resolved.fingerprint: load_states(conn, RULE.name)[resolved.fingerprint]}
        store_step(conn, prior, step_at(RULE, prior, T0 + MIN))          # resolved (the others untouched)
        root = enqueue(conn, channel="oncall", kind=FIRING, rule=RULE.name, fingerprints=[a.fingerprint for a in alerts],
                       payload={"alerts": [a.to_json() for a in alerts]}, now=T0, policy=POLICY)
        set_thread_root(conn, [firing.fingerprint, resolved.fingerprint], "oncall", root)
        set_thread_root(conn, [refired.fingerprint], "oncall", root + 100)   # fired again: a newer message
        entries = root_entries(conn, "oncall", root)
        assert root_entries(conn, "oncall", root + 1) is None          # no such message
    assert [(e.alert["fingerprint"], e.status) for e in entries or []] == [
        (firing.fingerprint, "firing"), (resolved.fingerprint, "resolved"),
        (refired.fingerprint, "resolved"), (forgotten.fingerprint, "resolved"),
    ]
    assert entries is not None and entries[1].resolved_at == T0 + MIN and entries[0].resolved_at is None


def test_a_broken_template_falls_back_to_a_plain_escaped_payload(state: StateStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import audit_watch.alerting.stages as stages

    def broken(*_args: Any) -> dict[str, Any]:
        raise ValueError("no such filter <b>")

    monkeypatch.setattr(stages, "compose", broken)
    alert = make_alert(name="<!here> & co")
    with state.write() as conn:
        payload = render(conn, planned(FIRING, "oncall", alert), CONFIG.channels["oncall"], Renderer(), T0)
    assert payload["text"] == ("failed-jobs: firing (&lt;!here&gt; &amp; co). "
                               "Rendering failed: ValueError: no such filter &lt;b&gt;")
    assert payload["html"] == ("<pre>failed-jobs: firing (&lt;!here&gt; &amp; co). "
                               "Rendering failed: ValueError: no such filter &lt;b&gt;</pre>")
    assert payload["alerts"] == [firing_state(alert).alert]


def test_the_fallback_fits_every_channel_type() -> None:
    item = planned(RESOLVED, "mail", make_alert())
    payload = fallback_payload(item, message_context(item, T0), "boom")
    assert {"text", "blocks", "subject", "html", "message_id", "title", "alerts"} <= set(payload)
    assert payload["subject"] == "[audit-watch] failed-jobs: resolved"


# --- queueing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "becomes_root"), [("oncall", True), ("mail", True), ("archive", False)])
def test_a_firing_notification_becomes_the_thread_root_where_channels_thread(
        state: StateStore, channel: str, becomes_root: bool) -> None:
    alert = make_alert()
    with state.write() as conn:
        outbox_id = enqueue_notification(conn, planned(FIRING, channel, alert), {"text": "x"},
                                         CONFIG.channels[channel], POLICY, T0)
        assert payload_of(conn, outbox_id) == {"text": "x"}
        roots = thread_roots(conn, [alert.fingerprint])
    assert roots == ({(alert.fingerprint, channel): outbox_id} if becomes_root else {})


def test_a_reply_is_queued_under_its_parent_and_moves_no_root(state: StateStore) -> None:
    alert = make_alert()
    with state.write() as conn:
        set_thread_root(conn, [alert.fingerprint], "oncall", 5)
        enqueue_notification(conn, planned(REPEAT, "oncall", alert, parent=5), {"text": "x"},
                             CONFIG.channels["oncall"], POLICY, T0)
        assert thread_roots(conn, [alert.fingerprint]) == {(alert.fingerprint, "oncall"): 5}
        assert states_by_fingerprint(conn, [alert.fingerprint]) == {}   # queueing writes no state


# --- sending --------------------------------------------------------------------------------


def claimed(*channels: str) -> list[Claimed]:
    return [Claimed(Notification(i, name, FIRING, RULE.name, {}, T0), 1, T0 + timedelta(days=1))
            for i, name in enumerate(channels, 1)]


class Recorder(Channel):
    def __init__(self, name: str, fail: Exception | None = None) -> None:
        super().__init__(name)
        self.fail = fail
        self.batches: list[list[int]] = []
        self.closed = False

    def send(self, notification: Notification) -> DeliveryResult:  # pragma: no cover - send_batch is used
        raise AssertionError("send_batch is used")

    def send_batch(self, notifications: Sequence[Notification]) -> list[DeliveryResult]:
        if self.fail:
            raise self.fail
        self.batches.append([n.id for n in notifications])
        return [DeliveryResult.delivered() for _ in notifications]

    def close(self) -> None:
        self.closed = True


def test_by_channel_keeps_the_claim_order_per_channel() -> None:
    grouped = by_channel(claimed("mail", "oncall", "mail"))
    assert {name: [c.notification.id for c in items] for name, items in grouped.items()} == {
        "mail": [1, 3], "oncall": [2]}


def test_senders_send_one_batch_per_channel_and_answer_one_result_each() -> None:
    recorder = Recorder("oncall")
    with Senders(CONFIG, {"oncall": recorder}) as senders:
        results = senders.send("oncall", claimed("oncall", "oncall"))
    assert recorder.batches == [[1, 2]] and [r.ok for r in results] == [True, True]


def test_a_sender_that_raises_is_retried_and_an_unknown_channel_is_dead() -> None:
    with Senders(CONFIG, {"oncall": Recorder("oncall", RuntimeError("socket closed"))}) as senders:
        raised = senders.send("oncall", claimed("oncall", "oncall"))
        unknown = senders.send("gone", claimed("gone"))
    assert [(r.ok, r.retryable, r.error) for r in raised] == [(False, True, "RuntimeError: socket closed")] * 2
    assert [(r.ok, r.retryable, r.error) for r in unknown] == [(False, False, "channel 'gone' is not configured")]


def test_senders_are_built_once_from_the_config_and_closed_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, dict[str, Any]]] = []

    def make(name: str, config: Any, base_dir: Any, **options: Any) -> Channel:
        built.append((name, options))
        return Recorder(name)

    monkeypatch.setattr("audit_watch.alerting.senders.make_channel", make)
    with Senders(CONFIG, options={"mail": {"timeout": 3}}) as senders:
        senders.send("mail", claimed("mail"))
        senders.send("mail", claimed("mail"))
        sender = senders.sender("mail")
    assert built == [("mail", {"timeout": 3})]
    assert isinstance(sender, Recorder) and sender.closed and sender.batches == [[1], [1]]
