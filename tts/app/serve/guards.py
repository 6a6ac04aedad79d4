"""ASGI middleware in front of every endpoint: requests from other web sites (and DNS rebinding) refused, and the
bearer token checked."""
from __future__ import annotations

import re
import secrets
import socket

from ...pipelines.remote import TOKEN_ENV
from .settings import ServerSettings

try:  # the serve extra
    from fastapi.responses import JSONResponse
except ImportError:  # main() says what to install
    JSONResponse = None

class SameSite:
    """ASGI middleware against other web sites (a page a user visits, DNS rebinding): the Host header must name
    this server (its address, localhost, this machine, ``server.allowed_hosts``), an Origin, when sent, must be
    this server's or one of ``server.allowed_origins``, and a POST's body must be ``application/json`` (which no
    page can send to another site without a CORS preflight, refused here)."""

    def __init__(self, app, settings: ServerSettings, origins: frozenset[str]):
        self.app, self.origins = app, origins
        self.hosts = {"localhost", "127.0.0.1", "::1", settings.host.lower().strip("[]"), socket.gethostname().lower(),
                      socket.getfqdn().lower()} | {h.lower() for h in settings.allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = self.problem(scope)
            if problem is not None:
                await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def problem(self, scope) -> tuple[int, str] | None:
        headers = {}
        for k, v in scope.get("headers") or []:
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        server = scope.get("server") or ("", 0)
        hosts = self.hosts | {str(server[0]).lower()}
        host = _host_name(headers.get("host", ""))
        if host not in hosts:
            return 403, (f"Host {headers.get('host', '')[:80]!r} is not this server's name (DNS rebinding?); reach it "
                         "by its address, or add the name to server.allowed_hosts")
        origin = headers.get("origin")
        if origin is not None:
            parts = origin.rstrip("/").lower()
            same = re.fullmatch(r"https?://([^/]+)", parts)
            own = same is not None and _host_name(same.group(1)) in hosts and _port(same.group(1)) == server[1]
            if not own and parts not in self.origins:
                return 403, (f"requests from Origin {origin[:80]!r} are not accepted; to let a front end's page call "
                             "this server, start it with server.allowed_origins=[<its origin>]")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        bodyless = "content-type" not in headers and headers.get("content-length", "0") == "0" \
            and "transfer-encoding" not in headers
        if scope.get("method") == "POST" and kind != "application/json" and not bodyless:
            return 415, "POST bodies must be application/json (Content-Type: application/json)"
        return None


def _host_name(value: str) -> str:
    """A Host header's (or an origin's host:port) name, lower case, without port, brackets or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rpartition(":")[0].rstrip(".") if value.count(":") == 1 else value.rstrip(".")


def _port(value: str) -> int | None:
    tail = value.rpartition("]")[2] if value.startswith("[") else value
    port = tail.rpartition(":")[2] if ":" in tail else ""
    return int(port) if port.isdigit() else None


class BearerToken:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>`` (plain ASGI, so that
    endpoints still see client disconnects)."""

    def __init__(self, app, expected: bytes):
        self.app, self.expected = app, expected

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                refused = JSONResponse({"detail": f"missing or wrong bearer token: send Authorization: Bearer "
                                                  f"${TOKEN_ENV}"}, status_code=401)
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)

