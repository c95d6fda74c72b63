"""One factory of Jinja environments for alerts and reports: the same sandbox, escaping
per medium, link checks and filters (each medium's own rules: test_render, test_reports)."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import StrictUndefined, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from audit_watch.channels.escaping import (
    Trusted,
    escape_markdown,
    html_link,
    markdown_link,
    mrkdwn_escape,
    one_line,
    safe_url,
    slack_link,
    text_link,
)
from audit_watch.channels.render import Renderer
from audit_watch.channels.templating import MEDIA, environment
from audit_watch.reports.render_report import environment as report_environment
from audit_watch.reports.render_report import template_folders

EVIL = "<!channel> & <https://evil.test|click>"
BAD_URLS = ["javascript:alert(1)", "data:text/html,x", "https://a.test/ x", "https://a.test/\x07", "", None]


def alert_env(medium: str) -> ImmutableSandboxedEnvironment:
    return Renderer().env(medium)


def report_env(medium: str) -> ImmutableSandboxedEnvironment:
    return report_environment(medium, template_folders(None))


@pytest.mark.parametrize("medium", ["slack", "html", "text"])
def test_alerts_and_reports_share_the_sandbox(medium: str) -> None:
    for env in (alert_env(medium), report_env(medium)):
        assert type(env) is ImmutableSandboxedEnvironment and env.undefined is StrictUndefined
        with pytest.raises(SecurityError):
            env.from_string("{{ x.__class__.__mro__ }}").render(x={})
        with pytest.raises(SecurityError):
            env.from_string("{{ xs.append(1) }}").render(xs=[])
        with pytest.raises(UndefinedError):
            env.from_string("{{ no_such_name }}").render()


def test_slack_escapes_the_same_three_characters_in_both() -> None:
    for env in (alert_env("slack"), report_env("slack")):
        assert env.from_string("{{ x }} {{ n }}").render(x=EVIL, n=5) == mrkdwn_escape(EVIL) + " 5"
        assert env.from_string("{{ x }}").render(x=Trusted("<https://ok.test|ok>")) == "<https://ok.test|ok>"


def test_html_is_autoescaped_in_both_also_in_a_partial(tmp_path: Path) -> None:
    (tmp_path / "_part.j2").write_text("[{{ x }}]")
    for env in (environment("html", [tmp_path]), report_environment("html", (str(tmp_path),)), alert_env("html")):
        assert env.from_string("{{ x }}").render(x="<b>&") == "&lt;b&gt;&amp;"
        assert env.from_string("{{ x }}").render(x=Markup("<b>ok</b>")) == "<b>ok</b>"
    assert environment("html", [tmp_path]).from_string('{% include "_part.j2" %}').render(x="<i>") == "[&lt;i&gt;]"
    assert environment("text", [tmp_path]).from_string('{% include "_part.j2" %}').render(x="<i>") == "[<i>]"


def test_only_reports_fold_untrusted_values_onto_one_line() -> None:
    value = "line one\nline two\x1b[31m"
    assert report_env("text").from_string("{{ x }}").render(x=value) == "line one line two [31m"
    assert report_env("slack").from_string("{{ x }}").render(x=value) == "line one line two [31m"
    assert report_env("html").from_string("{{ x }}").render(x=value) == "line one\nline two [31m"
    assert alert_env("text").from_string("{{ x }}").render(x=value) == value
    assert alert_env("slack").from_string("{{ x }}").render(x=value) == value


@pytest.mark.parametrize("url", BAD_URLS)
def test_every_link_refuses_what_is_not_http_or_mailto(url: str | None) -> None:
    assert safe_url(url) is None
    assert slack_link(url, "label") == "label" and markdown_link(url, "label") == "label"
    assert html_link(url, "label") == "label" and text_link(url, "label") == "label" and text_link(url) == ""
    for env in (alert_env("slack"), report_env("slack")):
        assert env.from_string("{{ u | link('go') }}").render(u=url) == "go"
    for name in ("slack_link", "md_link"):
        assert report_env("markdown").from_string(f"{{{{ u | {name}('go') }}}}").render(u=url) == "go"


def test_links_in_both_families_are_built_by_the_same_code() -> None:
    url = "https://auxot.example.com/audit-logs/jobs?status=failed&agent_id=a1"
    expected = "<https://auxot.example.com/audit-logs/jobs?status=failed&amp;agent_id=a1|A &amp; B>"
    assert alert_env("slack").from_string("{{ u | link(l) }}").render(u=url, l="A & B") == expected
    assert report_env("slack").from_string("{{ u | link(l) }}").render(u=url, l="A & B") == expected
    assert report_env("slack").from_string("{{ u | slack_link(l) }}").render(u=url, l="A & B") == expected
    assert report_env("markdown").from_string("{{ u | md_link(l) }}").render(u=url, l="A_B") == f"[A\\_B](<{url}>)"
    # A report's labels are folded onto one line first; a label we built stays as it is.
    assert report_env("slack").from_string("{{ u | slack_link(l) }}").render(u=url, l="a\nb").endswith("|a b>")
    assert markdown_link(url, Trusted("**bold**")) == f"[**bold**](<{url}>)"


def test_the_escaping_helpers() -> None:
    assert mrkdwn_escape("a & <b> 'q'") == "a &amp; &lt;b&gt; 'q'"
    assert one_line("a\n\tb\u202ec") == "a b c"
    assert escape_markdown("# x_y\n- z") == "\\# x\\_y - z" and escape_markdown("- z") == "\\- z"
    assert html_link("https://a.test/?a=1&b=2", "<x>") == '<a href="https://a.test/?a=1&amp;b=2">&lt;x&gt;</a>'
    assert text_link("mailto:ops@example.com", "ops") == "ops: mailto:ops@example.com"


def test_the_factory_knows_its_media() -> None:
    assert MEDIA == ("slack", "html", "markdown", "text")
    with pytest.raises(ValueError, match="unknown medium 'pdf'"):
        environment("pdf", [])
