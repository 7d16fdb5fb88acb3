"""Safe by default: a session per browser, CSRF tokens on every form, a login token off loopback.

* Every browser gets a random session id in an HttpOnly, SameSite=Strict cookie.
* Every form carries ``csrf``, an HMAC of the session id under a key made at start; a POST
  without the right one is refused (403).  Another site can make a browser post here but cannot
  read a page to learn the token.
* Served on an address other than loopback, every page first needs the login token printed at
  start (`needs_login`); on loopback the operating system's user boundary is the login.
* Pages are only served for the host names the server was started on, so a web page cannot
  reach it through a DNS name that resolves to 127.0.0.1 (DNS rebinding).
* Responses forbid inline script, framing and sniffing (Content-Security-Policy and friends).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "salesmgr_session"
CSRF_FIELD = "csrf"
OPEN_PATHS = ("/login", "/static/")  # reachable before logging in
HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def needs_login(host: str) -> bool:
    """Anything but a loopback address can be reached by others: it needs the login token."""
    return not is_loopback(host)


def allowed_hosts(host: str) -> set[str] | None:
    """Host names pages are served for; None means any (a server for the network, where the
    login token protects it)."""
    if not is_loopback(host):
        return None
    return {host.strip("[]"), "127.0.0.1", "localhost", "::1"}


class Guard:
    """Sessions, the CSRF token of each, and who has logged in."""

    def __init__(self, login_token: str | None) -> None:
        self.login_token = login_token
        self._key = secrets.token_bytes(32)
        self.signed_in: set[str] = set()
        self.flashes: dict[str, list[str]] = {}

    def csrf_token(self, session: str) -> str:
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, request: Request, form: FormData) -> None:
        given = form.get(CSRF_FIELD)
        expected = self.csrf_token(session_of(request))
        if not isinstance(given, str) or not hmac.compare_digest(given, expected):
            raise HTTPException(403, "this form is out of date or came from another site; "
                                     "reload the page and try again")

    def log_in(self, session: str, token: str) -> bool:
        if self.login_token is None:
            return True
        if hmac.compare_digest(token.encode(), self.login_token.encode()):
            self.signed_in.add(session)
            return True
        return False

    def may_enter(self, session: str) -> bool:
        return self.login_token is None or session in self.signed_in

    def flash(self, request: Request, text: str) -> None:
        """A message for the next page this browser shows."""
        self.flashes.setdefault(session_of(request), []).append(text)

    def take_flashes(self, request: Request) -> list[str]:
        return self.flashes.pop(session_of(request), [])


def session_of(request: Request) -> str:
    session: str = request.scope["salesmgr_session"]
    return session


class GuardMiddleware:
    """Gives each browser its session, checks the host and the login, adds the safety headers."""

    def __init__(self, app: ASGIApp, guard: Guard, hosts: set[str] | None) -> None:
        self.app = app
        self.guard = guard
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            await plain(send, 421, "this server answers only on the address it was started on")
            return
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header: treat as none
            cookie = SimpleCookie()
        session = cookie[SESSION_COOKIE].value if SESSION_COOKIE in cookie else ""
        new = len(session) != 43 or not session.replace("-", "").replace("_", "").isalnum()
        if new:
            session = secrets.token_urlsafe(32)
        scope["salesmgr_session"] = session
        path: str = scope["path"]
        if not self.guard.may_enter(session) and not path.startswith(OPEN_PATHS):
            await redirect(send, "/login", session if new else None)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if new:
                    extra.append((b"set-cookie", session_cookie(session)))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(host: str) -> str:
    """The host of a Host header, without its port (IPv6 brackets removed)."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def session_cookie(session: str) -> bytes:
    return f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict".encode()


async def plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]})
    await send({"type": "http.response.body", "body": text.encode()})


async def redirect(send: Send, location: str, new_session: str | None) -> None:
    headers = [(b"location", location.encode()), *HEADERS]
    if new_session is not None:
        headers.append((b"set-cookie", session_cookie(new_session)))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
