"""The daemon's HTTP endpoint: a WSGI server whose limits hold for every route.

The limits (:class:`HttpLimits`) live in the server, the routes in the
:class:`Router`, so a route added later (a status page, an API, a POST endpoint)
gets them without asking:

- a request must arrive whole (request line, headers and any body) within
  ``read_timeout`` of its connection, however slowly it trickles in; then the
  connection is closed;
- at most ``max_connections`` connections at once, each on its own thread; when
  all are taken, the oldest connection still sending its request is closed to
  make room (a client slow to ask must not lock out a health probe); a
  connection whose request is being answered is never closed, and new ones wait
  in the listen backlog for it;
- a response must be taken by the client within ``write_timeout``;
- one request per connection (HTTP/1.0, ``Connection: close``);
- a route lists its methods (``GET`` and ``HEAD`` unless it says otherwise);
  another method is answered 405 with ``Allow``; a body over ``max_body`` 413;
- every text the routes answer is scrubbed of configured secrets.

``on_event`` hears what the server did (``timeout``, ``evicted``, ``error``) and
``on_response`` each answer (route, status code), for the metrics.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from audit_watch.core.errors import short_error
from audit_watch.core.secrets import scrub

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
READ_ONLY = ("GET", "HEAD")
MAX_REQUEST_LINE = 8192


@dataclass(frozen=True)
class HttpLimits:
    read_timeout: float = 5.0        # seconds for the whole request to arrive
    write_timeout: float = 10.0      # seconds for each write of the response
    max_connections: int = 16        # connections (and threads) at once
    max_body: int = 64 * 1024        # bytes of a request body
    backlog: int = 64                # connections the kernel queues while all slots answer


# --- routing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    path: str
    app: WSGIApp
    methods: tuple[str, ...] = READ_ONLY


class Router:
    """A WSGI app: exact paths to route apps. A ``HEAD`` runs the route as ``GET``
    and drops the body; text bodies are scrubbed of secrets."""

    def __init__(self, routes: Iterable[Route] = (), max_body: int = HttpLimits.max_body,
                 on_response: Callable[[str, int], None] | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.max_body = max_body
        self.on_response = on_response
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        if route.path in self.routes:
            raise ValueError(f"a route for {route.path} exists already")
        methods = tuple(dict.fromkeys(m.upper() for m in route.methods))
        if "GET" in methods and "HEAD" not in methods:
            methods += ("HEAD",)
        self.routes[route.path] = Route(route.path, route.app, methods)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        route = self.routes.get(path)
        if route is None:
            known = ", ".join(sorted(self.routes))
            return self._answer(start_response, "other", "404 Not Found", f"not found (paths: {known})\n", method)
        if method not in route.methods:
            allow = ", ".join(route.methods)
            return self._answer(start_response, path, "405 Method Not Allowed", f"{method} is not allowed here "
                                f"(allowed: {allow})\n", method, [("Allow", allow)])
        if _content_length(environ) > self.max_body:
            return self._answer(start_response, path, "413 Content Too Large",
                                f"the body is over {self.max_body} bytes\n", method)
        status, headers, body = _collect(route.app, {**environ, "REQUEST_METHOD": "GET"} if method == "HEAD"
                                         else environ)
        if _is_text(headers):
            body = scrub(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        self._count(path, status)
        start_response(status, headers)
        return [b"" if method == "HEAD" else body]

    def _answer(self, start_response: Callable[..., Any], route: str, status: str, text: str, method: str,
                extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
        body = text.encode()
        self._count(route, status)
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                                *(extra or [])])
        return [b"" if method == "HEAD" else body]

    def _count(self, route: str, status: str) -> None:
        if self.on_response is not None:
            self.on_response(route, int(status.split()[0]))


def _collect(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI app to the end: (status, headers, body)."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = status, list(headers)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return answer["status"], answer["headers"], body


def _content_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _is_text(headers: list[tuple[str, str]]) -> bool:
    kind = next((v for k, v in headers if k.lower() == "content-type"), "").lower()
    encoded = any(k.lower() == "content-encoding" for k, _ in headers)
    return not encoded and (kind.startswith("text/") or "json" in kind)


# --- the server --------------------------------------------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side that gives up at a fixed moment, not after a quiet
    spell: a request sent a byte at a time still ends at the deadline."""

    def __init__(self, sock: socket.socket, deadline: float, write_timeout: float) -> None:
        self.sock, self.deadline, self.write_timeout = sock, deadline, write_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.write_timeout)


class _ServerHandler(ServerHandler):
    def log_exception(self, exc_info: Any) -> None:
        server = self.request_handler.server  # type: ignore[attr-defined]  # set by _RequestHandler.handle
        if isinstance(exc_info[1], TimeoutError):
            server.note("timeout")
            return
        server.note("error")
        log.warning("HTTP %s: %s", getattr(self, "environ", {}).get("PATH_INFO"), short_error(exc_info[1]))


class _RequestHandler(WSGIRequestHandler):
    server: _LimitedServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()    # replaced by a reader with a deadline
        limits = self.server.limits
        self.connection.settimeout(limits.write_timeout)
        deadline = time.monotonic() + limits.read_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline, limits.write_timeout))

    def handle(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self.server.answering(self.connection)
            handler = _ServerHandler(self.rfile, cast(IO[bytes], self.wfile), self.get_stderr(), self.get_environ(),
                                     multithread=True)
            handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's back-pointer for logging
            app = self.server.get_app()
            assert app is not None
            handler.run(app)
        except TimeoutError:
            self.server.note("timeout")
        except OSError:
            pass   # the client went away, or the connection was closed to make room

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are counted in /metrics, not logged."""


class _LimitedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, limits: HttpLimits,
                 note: Callable[[str], None]) -> None:
        self.address_family = family
        self.request_queue_size = limits.backlog
        self.limits = limits
        self.note = note
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._reading: dict[Any, float] = {}    # connections still sending their request, oldest first
        self._lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_activate(self) -> None:
        super().server_activate()
        # accept() must never block the loop (a client may vanish between select and accept).
        self.socket.settimeout(1.0)

    def get_request(self) -> tuple[Any, Any]:
        if not self._slots.acquire(blocking=False):
            self._evict_oldest_reader()
            if not self._slots.acquire(timeout=0.5):
                # Every slot answers a request: leave the connection in the backlog.
                raise OSError("all connections are answering requests")
        try:
            request, address = super().get_request()
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._reading[request] = time.monotonic()
        return request, address

    def _evict_oldest_reader(self) -> None:
        with self._lock:
            if not self._reading:
                return
            oldest = next(iter(self._reading))
            del self._reading[oldest]
        self.note("evicted")
        try:
            oldest.shutdown(socket.SHUT_RDWR)   # its thread reads the end of the stream and closes it
        except OSError:
            pass

    def answering(self, request: Any) -> None:
        """The request is in: from now on the connection is not closed to make room."""
        with self._lock:
            self._reading.pop(request, None)

    def close_request(self, request: Any) -> None:
        with self._lock:
            self._reading.pop(request, None)
        try:
            super().close_request(request)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.note("error")
        log.warning("HTTP connection from %s failed: %s", client_address[0] if client_address else "?",
                    short_error(sys.exc_info()[1] or Exception("unknown")))


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class OpsServer:
    """The app on ``listen``, served from a background thread that restarts its loop
    if it ever fails (the failure is logged and counted as ``error``)."""

    def __init__(self, listen: str, app: WSGIApp, limits: HttpLimits | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        host, port = parse_listen(listen)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.limits = limits or HttpLimits()
        self.on_event = on_event
        self.server = _LimitedServer((host, port), family, self.limits, self._note)
        self.server.set_app(app)
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="ops-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"

    def _note(self, event: str) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self.server.serve_forever(poll_interval=0.2)
            except Exception as exc:  # noqa: BLE001 - the endpoint must outlive any one failure
                self._note("error")
                log.error("the HTTP endpoint failed (restarting it): %s", short_error(exc))
                self._stopping.wait(1.0)
            else:
                return

    def start(self) -> OpsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
