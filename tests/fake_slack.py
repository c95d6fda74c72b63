"""A fake Slack on 127.0.0.1: the Web API (``/api/<method>``) and incoming webhooks (``/hooks/...``).

Real slack-sdk clients talk to it through ``base_url`` (the way slack-sdk's own
tests do). It records every request and answers from a per-method script
(``rate_limited(2)``, ``server_error()``, ``slack_error("channel_not_found")``),
falling back to success: ``chat.postMessage`` returns a channel id and a fresh ``ts``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CHANNEL_ID = "C0ALERTS"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None                   # dict -> JSON; str -> text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                 # seconds before answering (a hung Slack)


def rate_limited(retry_after: int = 2) -> Reply:
    return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})


def server_error(status: int = 500) -> Reply:
    return Reply(status, "upstream broke")


def hang(seconds: float) -> Reply:
    """Answer success, but only after ``seconds``: a client killed meanwhile gets nothing,
    and the request is recorded with status 0 (never answered)."""
    return Reply(200, None, {}, seconds)


def slack_error(code: str) -> Reply:
    return Reply(200, {"ok": False, "error": code})


@dataclass(frozen=True)
class Request:
    method: str                        # chat.postMessage, chat.update, webhook
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int                        # what the fake answered


class FakeSlack:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.received: list[str] = []      # methods, as requests arrive (before any answer)
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T000/B000/secret"

    def script(self, method: str, *replies: Reply) -> None:
        """Answer the next calls of ``method`` with ``replies`` (then success again)."""
        with self._lock:
            self._scripts[method].extend(replies)

    def calls(self, method: str, ok_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.requests if r.method == method and (not ok_only or r.status == 200)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeSlack:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    # --- serving ---------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode("utf-8") if length else ""
        if "json" in (handler.headers.get("Content-Type") or ""):
            body = json.loads(raw or "{}")
        else:
            body = {k: v[0] for k, v in parse_qs(raw).items()}
        method = "webhook" if handler.path.startswith("/hooks/") else handler.path.rsplit("/", 1)[-1]
        with self._lock:
            self.received.append(method)
            script = self._scripts[method]
            reply = script.popleft() if script else self._success(method, body)
        if reply.delay:
            time.sleep(reply.delay)
            if reply.body is None:
                reply = Reply(reply.status, self._success(method, body).body, reply.headers)
        payload = reply.body
        data = json.dumps(payload).encode() if isinstance(payload, dict) else str(payload or "").encode()
        # Recorded before the answer goes out: a client that has its answer must find its
        # request in ``requests`` (a test reading it right after a delivery, say).
        record = Request(method, handler.path, dict(handler.headers.items()), body, reply.status)
        with self._lock:
            self.requests.append(record)
        try:
            handler.send_response(reply.status)
            content_type = "application/json; charset=utf-8" if isinstance(payload, dict) else "text/plain; charset=utf-8"
            handler.send_header("Content-Type", content_type)
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:  # the client went away before the answer
            with self._lock:
                self.requests[self.requests.index(record)] = dataclasses.replace(record, status=0)

    def _success(self, method: str, body: dict[str, Any]) -> Reply:
        if method == "webhook":
            return Reply(200, "ok")
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            return Reply(200, {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {"ts": ts}})
        if method == "chat.update":
            return Reply(200, {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")})
        return Reply(200, {"ok": True})
