"""Who may talk to the service: Host and Origin checks, the bearer token, the access log.

One ASGI middleware (:class:`AccessGuard`), outermost, so a refused request costs no
body read and no model time:

- **Host** (DNS rebinding): a web page on ``evil.example`` whose name an attacker
  points at ``127.0.0.1`` reaches a service bound to this machine with
  ``Host: evil.example``. Only these Host names are answered: ``localhost``, IP
  address literals (a browser sends one only when the user typed that address, so no
  rebinding page can), and the names given with ``--allow-host`` or
  ``service.allowed_hosts``; ``*`` turns the check off (behind a proxy that checks it).
  Others get 403.
- **Origin** (cross-site requests): a browser sends ``Origin`` on every POST and on
  cross-origin fetches, and ``Sec-Fetch-Site`` on every request. A request from another
  origin (another site, or another port of this machine) is refused with 403, so no web
  page can make a visitor's browser search, reload or probe names here; a link from
  another site to the page itself (a top-level navigation) still opens it.
- **Token**: with ``--token`` (or ``$IMAGE_SEARCH_TOKEN``) every request other than the
  page, its static files and the API docs must carry ``Authorization: Bearer TOKEN``,
  else 401 (compared in constant time). The page asks for it once.
- **Access log**: one line per request on stderr (``lib.service.access``), method, path
  and query escaped to one line, status and milliseconds; ``--quiet`` turns it off.
  Headers, the token included, are never logged.
"""
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, FrozenSet, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from fastapi import FastAPI

from lib.errors import InputError, printable
from lib.service.limits import error_response, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

TOKEN_ENV = "IMAGE_SEARCH_TOKEN"
MIN_TOKEN_CHARS = 16
LOCAL_NAMES = frozenset({"localhost", "localhost."})
# Paths anyone may fetch: the page, its files and the API docs (no data, no model).
PUBLIC = ("/static/", "/swagger-assets/")
PUBLIC_EXACT = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/openapi.json",
                          "/favicon.ico"})


@dataclass(frozen=True)
class AccessPolicy:
    """What the guard lets through.

    Attributes:
        allowed_hosts: Extra Host names answered (lower case); ``*`` answers any.
        token: The bearer token every non-public request must carry; None: no token.
        access_log: Log one line per request.
    """

    allowed_hosts: FrozenSet[str] = frozenset()
    token: Optional[str] = None
    access_log: bool = True

    @classmethod
    def build(cls, hosts: Tuple[str, ...], token: Optional[str],
              access_log: bool = True) -> "AccessPolicy":
        """A checked policy.

        Raises:
            InputError: A token that is too short or not header-safe, or an empty host.
        """
        if token is not None:
            if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() \
                    or " " in token:
                raise InputError(f"the token must be at least {MIN_TOKEN_CHARS} printable "
                                 "ASCII characters without spaces (e.g. `openssl rand -hex "
                                 "32`)")
        names = set()
        for host in hosts:
            name = host.strip().lower()
            if not name or any(char in name for char in "/ @"):
                raise InputError(f"--allow-host {host!r}: give a host name such as "
                                 "search.example.com, an address, or *")
            names.add(name)
        return cls(frozenset(names), token, access_log)

    def host_allowed(self, name: str) -> bool:
        """Whether a Host name (without port, lower case) is answered."""
        if "*" in self.allowed_hosts or name in LOCAL_NAMES or name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return True


def split_host(value: str) -> Tuple[str, str]:
    """``("example.com", "8000")`` of a Host value (IPv6 in brackets kept)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[:end + 1], value[end + 2:] if end >= 0 else ""
    name, _, port = value.partition(":")
    return name, port


class AccessGuard:
    """ASGI middleware applying an :class:`AccessPolicy` and writing the access log."""

    def __init__(self, app: Callable[..., Awaitable[None]], policy: AccessPolicy):
        self.app = app
        self.policy = policy
        self.token = policy.token.encode("ascii") if policy.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: Dict[str, Any] = {"status": 0}

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None:
                await self.app(scope, receive, logged_send)
            else:
                status, text, headers = refusal
                response = error_response(status, text)
                response.headers.update(headers)
                await response(scope, receive, logged_send)
        finally:
            if self.policy.access_log:
                logger.info("%s \"%s %s\" %s %.1f ms", _client(scope), scope.get("method"),
                            _target(scope), state["status"] or "-",
                            (time.perf_counter() - started) * 1000)

    def _refusal(self, scope: Scope) -> Optional[Tuple[int, str, Mapping[str, str]]]:
        """(status, message, headers) of a refused request, or None to let it through."""
        headers = {key.decode("latin-1").lower(): value.decode("latin-1")
                   for key, value in scope.get("headers") or []}
        host = headers.get("host", "")
        name, _ = split_host(host)
        if not self.policy.host_allowed(name):
            return 403, (f"Host {printable(host)!r} is not served here: open the service "
                         "by its address, or start it with --allow-host NAME"), {}
        path = scope.get("path", "")
        public = path in PUBLIC_EXACT or path.startswith(PUBLIC)
        origin = headers.get("origin")
        if origin is not None and not self._same_origin(origin, host):
            return 403, (f"cross-origin request from {printable(origin)!r} refused: use "
                         "the service's own page, or a client that sends no Origin"), {}
        site = headers.get("sec-fetch-site")
        navigation = headers.get("sec-fetch-mode") == "navigate" and public \
            and scope.get("method") in ("GET", "HEAD")
        if site not in (None, "same-origin", "none") and not navigation:
            return 403, (f"{site} request refused: only the service's own page may "
                         "call it from a browser"), {}
        if self.token is not None and not public:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode("latin-1"), self.token):
                return 401, ("missing or wrong token: send the header Authorization: "
                             "Bearer TOKEN (the service was started with --token or "
                             f"${TOKEN_ENV})"), {"WWW-Authenticate": 'Bearer realm="image-search"'}
        return None

    def _same_origin(self, origin: str, host: str) -> bool:
        """Whether ``Origin`` is this service as the browser reached it (or an allowed
        name, as a proxy in front of it may change the Host and port)."""
        parts = urlsplit(origin.strip().lower())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False                                       # "null", file://, ...
        if parts.netloc == host.strip().lower():
            return True
        name, _ = split_host(parts.netloc)
        return name in self.policy.allowed_hosts or "*" in self.policy.allowed_hosts


def _client(scope: Scope) -> str:
    """``host:port`` of the peer."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _target(scope: Scope) -> str:
    """The request target as sent (percent-encoded), escaped to one line."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "backslashreplace")
    query = scope.get("query_string") or b""
    target = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return printable(target)


def install(app: FastAPI, policy: AccessPolicy) -> None:
    """Adds the guard to ``app`` (outermost: add it after every other middleware). The
    schema's 401 and bearer scheme, with a token: :mod:`lib.service.openapi`."""
    app.add_middleware(AccessGuard, policy=policy)
