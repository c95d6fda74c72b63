"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives.

``Controller(port=0)`` fails (its start-up check connects to port 0), so a free
port is picked first. Optional STARTTLS or implicit TLS with a throwaway
self-signed certificate (made with the ``openssl`` command, installed when CI is
set and it is missing) and login.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import os
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None
    connection: int                    # which SMTP session (connection) carried it


class _Recorder:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._sessions = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        if not hasattr(session, "aw_connection"):
            session.aw_connection = next(self._sessions)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, login, session.aw_connection))
        return "250 Message accepted for delivery"


def _authenticator(users: dict[str, str]) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and users.get(auth_data.login.decode()) == auth_data.password.decode():
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    return check


def openssl() -> str:
    """The ``openssl`` command. When it is missing: with ``CI`` set it is installed
    (``apt-get install -y openssl``) or the test fails saying why; elsewhere the test
    is skipped loudly (listed at the end of the run)."""
    found = shutil.which("openssl")
    if found:
        return found
    if not os.environ.get("CI"):
        SKIPPED_TLS.append("openssl is not installed (apt-get install -y openssl): the TLS tests were skipped")
        pytest.skip(f"!!! SKIPPING TLS TESTS !!! {SKIPPED_TLS[-1]}")
    tried = []
    for command in (["apt-get", "install", "-y", "-q", "openssl"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "openssl"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{' '.join(command)}: {exc}")
            break
        tried.append(f"{' '.join(command)}: exit {done.returncode} {done.stderr.strip()[-300:]}")
        found = shutil.which("openssl")
        if found:
            return found
    pytest.fail("openssl is missing and could not be installed (CI is set: the TLS tests must run): "
                + "; ".join(tried), pytrace=False)


SKIPPED_TLS: list[str] = []


def self_signed(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context that trusts it) for 127.0.0.1."""
    command = openssl()
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [command, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


class SmtpServer:
    """``with SmtpServer() as smtp: ... smtp.received``; ``port`` may be chosen before starting."""

    def __init__(self, port: int | None = None, *, starttls: ssl.SSLContext | None = None,
                 implicit_tls: ssl.SSLContext | None = None, users: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.recorder = _Recorder()
        options: dict[str, Any] = {}
        if starttls is not None:
            options.update(tls_context=starttls, require_starttls=True)
        if users:
            options.update(authenticator=_authenticator(users), auth_required=True)
        if implicit_tls is not None:
            options["ssl_context"] = implicit_tls
            options["auth_require_tls"] = False  # the whole connection is TLS already
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **options)

    @property
    def received(self) -> list[Received]:
        return self.recorder.received

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()


class StallingServer:
    """A mail server on 127.0.0.1 that accepts connections and then stops answering:
    ``stall="greeting"`` never says hello; ``stall="data"`` talks up to the end of the
    message, then never confirms it. Connections stay open until it stops."""

    def __init__(self, stall: str = "greeting", port: int | None = None) -> None:
        self.stall = stall
        self.port = port or free_port()
        self.accepted = 0
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._sockets.append(conn)
            if self.stall == "data":
                threading.Thread(target=self._talk_until_data, args=(conn,), daemon=True).start()

    def _talk_until_data(self, conn: socket.socket) -> None:
        try:
            conn.sendall(b"220 127.0.0.1 ESMTP\r\n")
            reader = conn.makefile("rb")
            for line in reader:
                command = line[:4].upper()
                if command in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    conn.sendall(b"250 OK\r\n")
                elif command == b"DATA":
                    conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    for body_line in reader:
                        if body_line == b".\r\n":
                            self._stop.wait()      # the message is in; the answer never comes
                            return
                elif command == b"QUIT":
                    conn.sendall(b"221 Bye\r\n")
                    return
        except OSError:
            return

    def __enter__(self) -> StallingServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in [*self._sockets, self._listener]:
            conn.close()
