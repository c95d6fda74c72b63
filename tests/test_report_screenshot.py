"""The HTML e-mail of the reports in headless Chromium at 600 px: the charts are drawn, nothing overflows.

Each report is built on generated data (the golden tests' seed, about 80,000 jobs),
turned into the e-mail the outbox sends (``email_message``: CSS inlined, charts as
inline parts by Content-ID), and the HTML part is written to a file with every
``cid:`` reference replaced by a ``data:`` URI of the part it names, so that a
browser shows what a mail client would. Then one Chromium run per report, in a
600 px wide window, with a small script added at the end of the body:

- ``--dump-dom``: the script, on ``load``, writes the page's widths and every
  image's ``complete``/``naturalWidth`` and box into a hidden ``<pre id=aw-result>``:
  each chart must be loaded, as big as its PNG, scaled into the column, and
  ``document.documentElement.scrollWidth`` must not exceed the 600 px;
- ``--screenshot``: the PNG is 600 px wide and not blank, and inside each chart's
  box there is a drawing, not an empty frame.

Besides the seeded data, a copy of the store has long words in it (a URL in an
error, snake_case agent and cron names, an address as a person's name), the
content that pushes a table past the window unless the template breaks it.

Chromium is Debian's ``chromium``. When it is missing the session fixture installs
it once (``apt-get install -y chromium``, as root); if that fails the tests are
skipped loudly on a laptop and fail when ``CI`` is set.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from audit_watch.config.model import Config
from audit_watch.demo.seed import seed_database
from audit_watch.reports import ReportResult, email_message, run_report
from audit_watch.store.source import AuditSource

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SEED, SCALE = 42, 0.25
WIDTH = 600
HEIGHT = 5000                  # the window: as tall as the longest report, so one shot holds every chart
CHROMIUM_TIMEOUT = 60          # seconds, for every Chromium call
INSTALL_TIMEOUT = 900          # seconds, for each apt-get call
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
)


# --- Chromium ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chromium:
    path: str
    version: str


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {INSTALL_TIMEOUT} s")


def _install_chromium() -> tuple[str | None, str]:
    """apt-get install chromium (after apt-get update when the package is unknown); (path, why not)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "not running as root, so the test setup cannot install it"
    if shutil.which("apt-get") is None:
        return None, "apt-get is not available to install it"
    done = _apt_get("install", "-y", "chromium")
    if done.returncode != 0:
        update = _apt_get("update")
        if update.returncode != 0:
            return None, f"apt-get update failed: {(update.stderr or update.stdout).strip()[-500:]}"
        done = _apt_get("install", "-y", "chromium")
    if done.returncode != 0:
        return None, f"apt-get install -y chromium failed: {(done.stderr or done.stdout).strip()[-500:]}"
    path = _find_chromium()
    return path, "" if path else "apt-get install -y chromium succeeded but no chromium binary is on PATH"


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Debian's Chromium, installed once for the session if missing; skip loudly, or fail under CI."""
    path, why = _find_chromium(), ""
    if path is None:
        path, why = _install_chromium()
    if path is None:
        message = f"headless Chromium is not available ({why}): the report screenshot tests did not run"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: they must run)", pytrace=False)
        warnings.warn(message, stacklevel=1)
        pytest.skip(f"!!! SKIPPING THE CHROMIUM SCREENSHOT TESTS !!! {message}; install Debian's chromium "
                    "(apt-get install chromium) to run them")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT)
        version = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
    except (subprocess.TimeoutExpired, OSError, IndexError) as exc:
        version = f"unknown ({exc})"
    return Chromium(path, version)


def _run_chromium(chromium: Chromium, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with a fresh profile; its whole process group dies at the timeout."""
    with tempfile.TemporaryDirectory(prefix="aw-chromium-") as profile:
        command = [chromium.path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            out, err = child.communicate(timeout=CHROMIUM_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            pytest.fail(f"{chromium.version} did not finish within {CHROMIUM_TIMEOUT} s: {' '.join(command)}")
        return subprocess.CompletedProcess(command, child.returncode, out, err)


# --- the reports as the e-mail carries them ------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screenshot") / "audit.db"
    seed_database(f"sqlite:///{path}", days=30, seed=SEED, scale=SCALE, end=END)
    return path


# Content from the store that is one long word: a URL in an error, snake_case names, an
# address as a person's name. Without breaking such words a table grows past 600 px.
LONG_URL = ("https://crm.internal.example.com/api/v2/accounts/0d9b3f0e-7c1a-4f55-9a7e-2c8b1d4e6f3a/contacts"
            "?include=owner,opportunities&page_size=500")
LONG_AGENT = "support_triage_escalations_eu_west_1_production_pipeline_v2"
LONG_CRON = "nightly_finance_report_reconciliation_export_to_s3_bucket"
LONG_PERSON = "fatima.hassan.al-mansouri.finance-operations@brightline-holdings.example.com"
LONG_WORDS = (
    ("UPDATE jobs SET error = 'Tool returned an error: GET ' || ? || ' returned 502 Bad Gateway' "
     "WHERE error LIKE '%502 Bad Gateway%'", (LONG_URL,)),
    ("UPDATE agents SET name = ? WHERE name = 'Support Triage'", (LONG_AGENT,)),
    ("UPDATE crons SET name = ? WHERE name LIKE 'Nightly finance%'", (LONG_CRON,)),
    ("UPDATE users SET name = ? WHERE name = 'Fatima Hassan'", (LONG_PERSON,)),
)


@pytest.fixture(scope="module")
def stores(seeded_file: Path) -> Iterator[dict[str, AuditSource]]:
    """The seeded store, and a copy of it with long words in names and errors."""
    long_file = seeded_file.with_name("long-words.db")
    shutil.copyfile(seeded_file, long_file)
    with sqlite3.connect(long_file) as db:
        for sql, params in LONG_WORDS:
            assert db.execute(sql, params).rowcount > 0, sql
    sources = {"seeded": AuditSource.from_url(f"sqlite:///{seeded_file}"),
               "long-words": AuditSource.from_url(f"sqlite:///{long_file}")}
    yield sources
    for src in sources.values():
        src.engine.dispose()


WEEK = {"start": END - timedelta(days=7), "end": END}
REPORTS: dict[str, tuple[str, dict[str, Any]]] = {
    "weekly-digest": ("seeded", {"name": "weekly-digest"}),
    "compliance-user": ("seeded", {"name": "compliance", "user": "daniel.reyes@brightline.io", **WEEK}),
    "compliance-team": ("seeded", {"name": "compliance", "team": "Finance & Operations", **WEEK}),
    "weekly-digest-long-words": ("long-words", {"name": "weekly-digest"}),
    "compliance-team-long-words": ("long-words", {"name": "compliance", "team": "Finance & Operations", **WEEK}),
}
# What each long-words report must show, or the case tests nothing.
LONG_WORDS_SHOWN = {
    "weekly-digest-long-words": (LONG_URL[:60], LONG_AGENT, LONG_CRON),
    "compliance-team-long-words": (LONG_URL[:60], LONG_PERSON),
}


def email_html_with_data_uris(result: ReportResult) -> tuple[str, dict[str, bytes]]:
    """The HTML part of ``email_message(result)`` with each ``cid:`` replaced by its part as a data URI."""
    message = email_message(result, "audit-watch@example.com", ["security@example.com"])
    parts = list(message.walk())
    html_parts = [p for p in parts if p.get_content_type() == "text/html"]
    assert len(html_parts) == 1
    page = html_parts[0].get_content()
    images = {str(p["Content-ID"]).strip("<>"): p.get_payload(decode=True)
              for p in parts if p.get_content_maintype() == "image" and p["Content-ID"]}
    for cid, data in images.items():
        assert f"cid:{cid}" in page, f"the inline part {cid} is not shown in the HTML"
        page = page.replace(f"cid:{cid}", "data:image/png;base64," + base64.b64encode(data).decode())
    assert "cid:" not in page, "the HTML refers to a Content-ID the message does not carry"
    return page, images


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# The measuring script: appended to a copy of the page; runs on load (after every image).
MEASURE = """
<script>
window.addEventListener("load", function () {
  var root = document.documentElement;
  var images = Array.prototype.map.call(document.images, function (img) {
    var box = img.getBoundingClientRect();
    return {alt: img.alt.slice(0, 60), isData: img.currentSrc.indexOf("data:image/png") === 0,
            complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
            left: box.left, top: box.top + window.scrollY, width: box.width, height: box.height};
  });
  var overflowing = [];
  Array.prototype.forEach.call(document.body.querySelectorAll("*"), function (el) {
    var box = el.getBoundingClientRect();
    if (box.right > root.clientWidth + 0.5 && overflowing.length < 15) {
      overflowing.push(el.tagName.toLowerCase() + (el.className ? "." + el.className : "") + " right="
                       + Math.round(box.right) + " " + (el.textContent || "").trim().slice(0, 80));
    }
  });
  var result = {innerWidth: window.innerWidth, clientWidth: root.clientWidth, scrollWidth: root.scrollWidth,
                bodyScrollWidth: document.body.scrollWidth,
                contentHeight: Math.ceil(document.body.getBoundingClientRect().bottom + window.scrollY),
                images: images, overflowing: overflowing};
  var pre = document.createElement("pre");
  pre.id = "aw-result";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>
"""


def show(chromium: Chromium, page: str, folder: Path) -> tuple[dict[str, Any], Image.Image]:
    """One Chromium run on ``page`` in a 600 px window: (the MEASURE script's result, the screenshot)."""
    assert "</body>" in page
    measured = folder / "page.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>", 1), encoding="utf-8")
    shot = folder / "screenshot.png"
    done = _run_chromium(chromium, f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=5000",
                         "--dump-dom", f"--screenshot={shot}", measured.as_uri())
    found = re.search(r'<pre id="aw-result"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, (f"{chromium.version} wrote no measurement (exit {done.returncode}): "
                   f"{done.stderr.strip()[-1500:]}")
    assert shot.exists(), f"{chromium.version} wrote no screenshot (exit {done.returncode}): {done.stderr[-1500:]}"
    with Image.open(shot) as image:
        picture = image.convert("RGB")
    return dict(json.loads(html.unescape(found.group(1)))), picture


@dataclass
class Rendered:
    report: str
    result: ReportResult
    images: dict[str, bytes]           # Content-ID -> PNG
    dom: dict[str, Any]
    screenshot: Image.Image


@pytest.fixture(scope="module", params=list(REPORTS))
def rendered(request: pytest.FixtureRequest, stores: dict[str, AuditSource], chromium: Chromium,
             tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    store, spec = REPORTS[request.param]
    spec = dict(spec)
    result = run_report(spec.pop("name"), stores[store], Config(), now=END, **spec)
    page, images = email_html_with_data_uris(result)
    for text in LONG_WORDS_SHOWN.get(request.param, ()):
        assert html.escape(text) in page, f"{text!r} is not in the {request.param} e-mail"
    folder = tmp_path_factory.mktemp(request.param)
    (folder / "email.html").write_text(page, encoding="utf-8")
    dom, picture = show(chromium, page, folder)
    print(f"\n{request.param}: {chromium.version}; scrollWidth {dom['scrollWidth']} of {dom['clientWidth']} "
          f"(window {dom['innerWidth']}), content {dom['contentHeight']} px tall; images "
          + ", ".join(f"{i['naturalWidth']}x{i['naturalHeight']} shown {i['width']:.0f}x{i['height']:.0f}"
                      for i in dom["images"]) + f"; screenshot {picture.width}x{picture.height} in {folder}")
    return Rendered(request.param, result, images, dom, picture)


# --- the checks -----------------------------------------------------------------------------------


def test_the_measurement_sees_an_overflow_and_a_missing_image(chromium: Chromium, tmp_path: Path) -> None:
    # The checks below can fail: a 900 px table and an image that is not there are seen as such.
    broken = base64.b64encode(b"not a PNG").decode()
    page = ('<!DOCTYPE html><html><body style="margin:0"><table style="width:900px"><tr><td>wide</td></tr></table>'
            f'<img src="cid:chart@audit-watch"><img src="data:image/png;base64,{broken}"></body></html>')
    dom, _ = show(chromium, page, tmp_path)
    assert dom["innerWidth"] == WIDTH and dom["scrollWidth"] >= 900 and dom["overflowing"]
    assert [(i["isData"], i["naturalWidth"]) for i in dom["images"]] == [(False, 0), (True, 0)]


def test_window_is_600_px_wide(rendered: Rendered) -> None:
    # Otherwise the overflow check below would measure some other width.
    assert rendered.dom["innerWidth"] == WIDTH


def test_no_horizontal_overflow_at_600_px(rendered: Rendered) -> None:
    dom = rendered.dom
    assert dom["scrollWidth"] <= WIDTH and dom["bodyScrollWidth"] <= WIDTH, dom["overflowing"]
    assert dom["scrollWidth"] <= dom["clientWidth"], dom["overflowing"]
    assert not dom["overflowing"]


def test_every_chart_is_in_the_email_and_loaded(rendered: Rendered) -> None:
    charts = rendered.result.charts
    if rendered.report.startswith("weekly-digest"):
        assert [c.filename for c in charts] == ["daily-jobs.png", "tokens-by-agent.png"]
    assert len(rendered.images) == len(charts)
    images = rendered.dom["images"]
    assert len(images) == len(charts), images
    for shown, chart in zip(images, charts):
        natural = png_size(chart.data)
        assert shown["isData"] and shown["complete"], shown
        assert (shown["naturalWidth"], shown["naturalHeight"]) == natural, shown
        # Scaled to the column, never wider than the window, and not collapsed.
        assert 0 <= shown["left"] and shown["left"] + shown["width"] <= rendered.dom["clientWidth"], shown
        assert shown["width"] >= 0.8 * (WIDTH - 2 * 24), shown
        assert shown["height"] == pytest.approx(shown["width"] * natural[1] / natural[0], abs=2), shown


def test_screenshot_is_600_px_wide_and_not_blank(rendered: Rendered) -> None:
    assert rendered.screenshot.width == WIDTH
    assert rendered.dom["contentHeight"] <= rendered.screenshot.height, "the report is taller than the shot"
    picture = rendered.screenshot.crop((0, 0, WIDTH, rendered.dom["contentHeight"]))
    colours = picture.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot is (nearly) a single colour"
    background = {(255, 255, 255), (0xF4, 0xF5, 0xF7)}
    drawn = sum(n for n, colour in colours if colour not in background)
    assert drawn > 0.02 * picture.width * picture.height, f"only {drawn} pixels are not background"


def test_screenshot_shows_a_drawing_inside_every_chart(rendered: Rendered) -> None:
    for shown in rendered.dom["images"]:
        box = (round(shown["left"]), round(shown["top"]), round(shown["left"] + shown["width"]),
               round(shown["top"] + shown["height"]))
        if box[3] > rendered.screenshot.height:
            pytest.fail(f"chart {shown['alt']!r} lies below the {rendered.screenshot.height} px screenshot")
        crop = rendered.screenshot.crop(box)
        colours = crop.getcolors(maxcolors=1 << 20) or []
        ink = sum(n for n, colour in colours if sum(colour) < 3 * 200)
        assert len(colours) > 16 and ink > 0.005 * crop.width * crop.height, \
            f"chart {shown['alt']!r} at {box} looks empty ({len(colours)} colours, {ink} dark pixels)"


def test_standalone_html_has_the_same_charts_as_data_uris(rendered: Rendered) -> None:
    # ReportResult.html (files, browsers) carries the same PNGs inline, as data URIs.
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', rendered.result.html)
    assert [base64.b64decode(u) for u in uris] == [c.data for c in rendered.result.charts]
    assert "cid:" not in rendered.result.html
