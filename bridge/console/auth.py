"""The console's login: a password, a signed session cookie, and who may open a softphone.

The session is stateless: the cookie carries its own expiry under an HMAC keyed by a key
derived from CONSOLE_PASSWORD, so every replica accepts a cookie any other one issued, and
changing the password logs everyone out. Logging out also forgets the cookie on the instance
that served the logout (a cookie copied before it would still work on other replicas until
it expires; that is the price of needing no shared state).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

COOKIE_NAME: Final = "pb_console"
SESSION_TTL_S: Final = 12 * 3600
# Keeps this key apart from any other use of the password (none today, but the password is
# an operator's secret and may well be reused for something else).
_KEY_LABEL: Final = b"phone-bridge console session v1"
_VERSION: Final = "v1"
_NONCE_BYTES: Final = 12
_MAC_BYTES: Final = 32
# A cookie longer than this is not one of ours: refuse it before any base64 or HMAC work.
_MAX_COOKIE_CHARS: Final = 200
# A clock that steps back must not make a fresh cookie look like it was issued in the future.
_MAX_SKEW_S: Final = 300


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks console session cookies, and checks the password."""

    def __init__(
        self,
        password: str,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not password:
            raise ValueError("the console needs a password")
        # scrypt, not one fast hash: a cookie captured from a browser profile or a backup
        # must not make guessing the password offline cheap. Same inputs on every replica,
        # so each accepts the others' cookies. (~50 ms, once per process.)
        self._key = hashlib.scrypt(
            password.encode("utf-8"), salt=_KEY_LABEL, n=2**14, r=8, p=1, dklen=32
        )
        # Compared as digests so that the comparison takes the same time whatever the
        # length of the guess: compare_digest leaks the length of unequal-length inputs.
        self._password_digest = hashlib.sha256(password.encode("utf-8")).digest()
        self.ttl_s = ttl_s
        self._clock = clock
        self._revoked: dict[str, float] = {}  # nonce -> expiry, per process
        self._lock = threading.Lock()

    def password_matches(self, given: str) -> bool:
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._password_digest)

    def issue(self) -> str:
        expires = int(self._clock() + self.ttl_s)
        body = f"{_VERSION}.{expires}.{_b64(secrets.token_bytes(_NONCE_BYTES))}"
        return f"{body}.{_b64(self._mac(body))}"

    def valid(self, cookie: str | None) -> bool:
        """Genuine, unexpired and not logged out here."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS or not cookie.isascii():
            return False
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
            return False
        body, mac_text = cookie.rpartition(".")[0], parts[3]
        try:
            mac = _unb64(mac_text)
        except ValueError:
            return False
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        now = self._clock()
        expires = int(parts[1])
        if expires <= now or expires > now + self.ttl_s + _MAX_SKEW_S:
            return False
        with self._lock:
            return parts[2] not in self._revoked

    def revoke(self, cookie: str | None) -> None:
        """Log a session out on this instance (only a genuine one: a forged cookie must not
        grow the list)."""
        if not self.valid(cookie):
            return
        assert cookie is not None
        _, expires, nonce, _ = cookie.split(".")
        now = self._clock()
        with self._lock:
            for old in [n for n, until in self._revoked.items() if until <= now]:
                del self._revoked[old]
            self._revoked[nonce] = float(expires)

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]


@dataclass(slots=True)
class _Client:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class LoginThrottle:
    """Makes password guessing slow without letting a guesser lock the operator out.

    Per client address: one login is checked at a time and a wrong one holds that address
    for `delay_s`, so one address guesses at about 1/`delay_s` per second however many it
    sends at once; past `max_waiting_per_client` of its attempts queued, the next is
    refused unchecked (answer 429) - for that address only. Across all addresses, at most
    `max_checking` logins are checked (or held after a wrong guess) at once, so guesses from
    many addresses together go at most `max_checking`/`delay_s` per second, and past
    `max_waiting` attempts queued in all, the next is refused unchecked.

    The address is the client's as the server sees it: behind a proxy, what the server
    takes from X-Forwarded-For for the proxies it trusts (uvicorn's FORWARDED_ALLOW_IPS),
    never the header alone, which a guesser could set to look like many people.
    """

    def __init__(
        self,
        delay_s: float = 0.5,
        max_waiting_per_client: int = 10,
        max_checking: int = 4,
        max_waiting: int = 100,
    ) -> None:
        self.delay_s = delay_s
        self.max_waiting_per_client = max_waiting_per_client
        self.max_waiting = max_waiting
        self._checking = asyncio.Semaphore(max_checking)
        self._clients: dict[str, _Client] = {}
        self._waiting = 0

    async def check(self, client: str, matches: Callable[[], bool]) -> bool | None:
        """True/False: the password was right/wrong; None: too many attempts queued (from
        this client, or in all), not checked."""
        state = self._clients.get(client)
        if state is None:
            if self._waiting >= self.max_waiting:
                return None
            state = self._clients[client] = _Client()
        if state.waiting >= self.max_waiting_per_client or self._waiting >= self.max_waiting:
            return None
        state.waiting += 1
        self._waiting += 1
        try:
            async with state.lock, self._checking:
                if matches():
                    return True
                await asyncio.sleep(self.delay_s)
                return False
        finally:
            state.waiting -= 1
            self._waiting -= 1
            if not state.waiting:
                del self._clients[client]  # nothing kept for an address that went quiet


def _netloc(scheme: str, host: str) -> str:
    """host[:port] in lower case, without the scheme's default port."""
    host = host.strip().lower()
    default = {"http": ":80", "ws": ":80", "https": ":443", "wss": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


def same_origin(headers: Mapping[str, str], public_url: str | None) -> bool:
    """Whether the request's Origin is this server: PUBLIC_URL's origin, or the host the
    browser addressed (Host, or X-Forwarded-Host behind a proxy).

    A cross-site page can make the browser attach the session cookie to a WebSocket (no
    SameSite protection applies to same-site subdomains, and older browsers ignore it), but
    it cannot forge Origin. Matching against Host is safe even under DNS rebinding: the
    rebound name is another site, so the browser sends it no cookie of ours.
    """
    origin = headers.get("origin")
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    theirs = _netloc(parts.scheme, parts.netloc)
    if public_url:
        public = urlsplit(public_url)
        if public.scheme == parts.scheme and _netloc(public.scheme, public.netloc) == theirs:
            return True
    hosts = [headers.get("host", "")]
    forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
    if forwarded:
        hosts.append(forwarded)
    return any(host and _netloc(parts.scheme, host) == theirs for host in hosts)
