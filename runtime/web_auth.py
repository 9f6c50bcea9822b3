"""Who may use the daemon's HTTP server, and which requests may change anything.

- The token (http.token or FINPRINT_HTTP_TOKEN) is required on every route when one is set, and one must be
  set when the server is bound beyond loopback (runtime/config.py). It comes as `Authorization: Bearer`, as a
  cookie (HttpOnly, SameSite=Strict) or once as `?token=` in the address, which sets the cookie.
- A POST must carry the page's CSRF token in the `X-Finprint-CSRF` header (a custom header a cross-site form
  cannot send, and cross-site fetch cannot without a CORS preflight this server never answers), and, where the
  browser says, come from this origin (`Origin`, `Sec-Fetch-Site`).
- Bound to loopback without a token, the `Host` must be a loopback name: a web site that rebinds its DNS name to 127.0.0.1
  cannot read the page.
- Files are served by name from one folder only: `safe_file` refuses anything that could leave it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

COOKIE = "finprint_token"
CSRF_HEADER = "X-Finprint-CSRF"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass
class Verdict:
    ok: bool
    code: int = 200
    reason: str = ""
    set_cookie: str | None = None  # a Set-Cookie value when the token came in the address


@dataclass
class Auth:
    token: str | None
    loopback: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # per daemon start; the page embeds it

    def cookie_header(self) -> str:
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"

    def check(self, headers: dict[str, str], query: dict[str, str]) -> Verdict:
        """Any request: the Host (loopback only) and the token."""
        host = headers.get("host", "")
        if self.loopback and self.token is None and _hostname(host) not in _LOOPBACK_HOSTS:
            return Verdict(False, 403, f"host {host!r} is not this machine's loopback name; open http://127.0.0.1:<port>/")
        if self.token is None:
            return Verdict(True)
        given = _bearer(headers.get("authorization", "")) or _cookie(headers.get("cookie", ""))
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return Verdict(True)
        from_query = query.get("token")
        if from_query and hmac.compare_digest(from_query.encode(), self.token.encode()):
            return Verdict(True, set_cookie=self.cookie_header())
        return Verdict(False, 401, "a token is needed: Authorization: Bearer <token>, or open the page once with ?token=<token>")

    def check_post(self, headers: dict[str, str]) -> Verdict:
        """A request that changes something: same origin, and the page's CSRF token."""
        origin = headers.get("origin")
        host = headers.get("host", "")
        if origin is not None and urlsplit(origin).netloc != host:
            return Verdict(False, 403, f"cross-site request refused (origin {origin})")
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return Verdict(False, 403, "cross-site request refused")
        given = headers.get(CSRF_HEADER.lower(), "")
        if not given or not hmac.compare_digest(given.encode(), self.csrf.encode()):
            return Verdict(False, 403, f"missing or stale {CSRF_HEADER} header; reload the page")
        return Verdict(True)


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _cookie(value: str) -> str | None:
    try:
        jar = SimpleCookie(value)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def safe_file(folder: Path | None, name: str) -> Path | None:
    """`folder/name` when `name` is one plain file name (no separator, no leading dot) of a file inside `folder`;
    else None. Resolving both guards against a link inside the folder pointing out of it."""
    if folder is None or not _SAFE_NAME.fullmatch(name):
        return None
    base = folder.resolve()
    path = (base / name).resolve()
    if path.parent != base or not path.is_file():
        return None
    return path
