"""Short-lived, single-use, per-call tokens that admit a media stream.

Defense in depth behind the `X-Twilio-Signature` on the WebSocket upgrade: the TwiML that
answers a call carries a token bound to that call's CallSid as a `<Parameter>`, Twilio
echoes it back in `start.customParameters`, and the bridge opens an AI session (which costs
money) only if the token is genuine, fresh, issued for the CallSid in that `start`, and not
redeemed before. Someone who learned the stream URL, or captured a `start` message and
replays it, gets nothing.

Wire format (61 ASCII characters, URL- and XML-safe, far below Twilio's 500-character
parameter limit)::

    base64url(payload) "." base64url(binding || tag)

    payload = version (1 byte) || issued_at (uint32 big-endian, Unix seconds) || nonce (16)
    binding = HMAC-SHA256(k_call, payload || call_sid as UTF-8)[:8]
    tag     = HMAC-SHA256(k_tag,  payload || binding)[:16]

The CallSid is bound through `binding`, never stored. Two MACs instead of one let a failed
check say *why*: a broken `tag` means forged or tampered ("bad_signature", or replicas that
disagree on the secret); a good `tag` with a `binding` for another CallSid means a genuine
token carried over to a different call ("wrong_call"). Every byte of the token is under
`tag`, so tampering never reads as "wrong_call". The payload (21 bytes) and the MACs (24
bytes) are whole multiples of 3 bytes, so their base64 has no padding and no spare bits:
each string has exactly one encoding, and every single-character change changes the bytes.

Replay protection is an in-memory cache of redeemed nonces, per process. A restarted or a
different instance does not know it, so a token redeemed on one replica can be redeemed
once more on another until it expires. That is accepted: the TTL still bounds the window,
the Twilio signature on the upgrade is the first line of defense, and sharing a cache
between replicas would add a dependency for little gain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import logging
import math
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Literal

logger = logging.getLogger(__name__)

Reason = Literal["missing", "malformed", "bad_signature", "expired", "wrong_call", "replayed"]

_REASON_TEXT: Final[dict[str, str]] = {
    "missing": "no stream token",
    "malformed": "stream token is not in the expected format",
    "bad_signature": "stream token signature does not verify",
    "expired": "stream token is outside its validity window",
    "wrong_call": "stream token was issued for another call",
    "replayed": "stream token was already used",
}

_VERSION: Final = 1
_PAYLOAD = struct.Struct(">BI16s")  # version, issued_at, nonce: 21 bytes
_BINDING_BYTES: Final = 8
_TAG_BYTES: Final = 16
_PAYLOAD_CHARS: Final = 28  # 21 bytes of base64, no padding
_MAC_CHARS: Final = 32  # 24 bytes of base64, no padding
TOKEN_LENGTH: Final = _PAYLOAD_CHARS + 1 + _MAC_CHARS
# ASCII only on purpose: `[A-Za-z0-9]` never matches other scripts' letters or digits.
_TOKEN_RE: Final = re.compile(
    rf"[A-Za-z0-9_-]{{{_PAYLOAD_CHARS}}}\.[A-Za-z0-9_-]{{{_MAC_CHARS}}}", re.ASCII
)

_AUTH_TOKEN_LABEL: Final = b"phone-bridge stream token v1"
_MIN_SECRET_BYTES: Final = 16


class StreamTokenError(Exception):
    """A stream token was refused; `reason` says why, the message never holds the token."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(_REASON_TEXT[reason])
        self.reason: Reason = reason

    def __reduce__(self) -> tuple[type[StreamTokenError], tuple[Reason]]:
        # Rebuild from the reason, not the message (pickling, multiprocessing).
        return (type(self), (self.reason,))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    # Only called on strings that already matched _TOKEN_RE, so lengths are exact and the
    # alphabet is checked; validate=True refuses anything else all the same.
    return base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)


class StreamTokens:
    """Issues per-call stream tokens and redeems each at most once (per instance).

    One instance serves the whole process: `issue` in the voice webhook, `redeem` when the
    stream's `start` arrives. Redemption is guarded by a lock, so threads may share it too.
    """

    PARAMETER: Final = "token"
    MAX_SKEW_S: Final = 30.0
    """How far in the future an issue time may lie: replicas' clocks disagree a little."""

    def __init__(
        self,
        secret: bytes,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        *,
        max_replay_entries: int = 100_000,
    ) -> None:
        """`secret` keys the MACs; every replica must hold the same one (see
        `from_auth_token`). `ttl_s` is generous, Twilio connects within seconds of the
        webhook. `max_replay_entries` caps the memory of the replay cache."""
        if not isinstance(secret, bytes | bytearray) or len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"stream token secret must be at least {_MIN_SECRET_BYTES} bytes")
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError("ttl_s must be a positive number of seconds")
        if max_replay_entries < 1:
            raise ValueError("max_replay_entries must be at least 1")
        # Separate subkeys per MAC, so neither MAC can ever be passed off as the other.
        self._call_key = hmac.new(bytes(secret), b"call binding", hashlib.sha256).digest()
        self._tag_key = hmac.new(bytes(secret), b"token tag", hashlib.sha256).digest()
        self._ttl_s = float(ttl_s)
        self._clock = clock
        self._max_replay_entries = max_replay_entries
        # nonce -> forget-after time, plus a min-heap on that time for cheap pruning and
        # for finding the entry closest to expiry when the cap is hit.
        self._redeemed: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_auth_token(cls, auth_token: str, **kw: Any) -> StreamTokens:
        """Derive the secret from the Twilio Auth Token, so every replica behind a load
        balancer agrees without more configuration. The label keeps this key apart from the
        Auth Token's own use (Twilio's HMAC-SHA1 request signatures)."""
        if not auth_token:
            # An empty key would make the derived secret a public constant.
            raise ValueError("a Twilio Auth Token is required to derive the stream secret")
        secret = hmac.new(auth_token.encode("utf-8"), _AUTH_TOKEN_LABEL, hashlib.sha256).digest()
        return cls(secret, **kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ttl_s={self._ttl_s}, redeemed={len(self._redeemed)})"

    @property
    def replay_cache_size(self) -> int:
        """How many redeemed nonces are remembered now (for tests and metrics)."""
        return len(self._redeemed)

    def issue(self, call_sid: str) -> str:
        """A fresh token for `call_sid`, to put in the TwiML as `<Parameter name="token">`."""
        if not isinstance(call_sid, str) or not call_sid:
            raise ValueError("call_sid must be a non-empty string")
        issued_at = math.floor(self._clock())
        if not 0 <= issued_at <= 0xFFFFFFFF:
            raise ValueError("clock is outside the range a stream token can encode")
        payload = _PAYLOAD.pack(_VERSION, issued_at, secrets.token_bytes(16))
        binding = self._binding(payload, call_sid)
        return _b64encode(payload) + "." + _b64encode(binding + self._tag(payload, binding))

    def redeem(self, token: str | None, call_sid: str) -> None:
        """Accept `token` for `call_sid` once, or raise `StreamTokenError`.

        Checks run cheapest and most telling first: presence, shape, signature, call,
        time, reuse. Nothing but a fully valid token touches the replay cache, so a
        failed attempt neither burns a genuine token nor grows memory.
        """
        if token is None:
            raise StreamTokenError("missing")
        if not isinstance(token, str):  # e.g. a number from a hand-made `start`
            raise StreamTokenError("malformed")
        if not token:
            raise StreamTokenError("missing")
        if len(token) != TOKEN_LENGTH:
            raise StreamTokenError("malformed")
        if _TOKEN_RE.fullmatch(token) is None:
            raise StreamTokenError("malformed")
        try:
            payload = _b64decode(token[:_PAYLOAD_CHARS])
            macs = _b64decode(token[_PAYLOAD_CHARS + 1 :])
        except (binascii.Error, ValueError):  # pragma: no cover - the regex rules it out
            raise StreamTokenError("malformed") from None
        version, issued_at, nonce = _PAYLOAD.unpack(payload)
        if version != _VERSION:
            raise StreamTokenError("malformed")
        binding, tag = macs[:_BINDING_BYTES], macs[_BINDING_BYTES:]
        if not hmac.compare_digest(tag, self._tag(payload, binding)):
            raise StreamTokenError("bad_signature")
        if not isinstance(call_sid, str) or not call_sid:
            raise StreamTokenError("wrong_call")
        if not hmac.compare_digest(binding, self._binding(payload, call_sid)):
            raise StreamTokenError("wrong_call")

        with self._lock:
            now = self._clock()
            # One expression for "expired" here and in _prune: a nonce is forgotten exactly
            # when its token starts being refused as expired, never a float ulp earlier.
            forget_after = issued_at + self._ttl_s
            if now > forget_after or issued_at - now > self.MAX_SKEW_S:
                raise StreamTokenError("expired")
            self._prune(now)
            if nonce in self._redeemed:
                raise StreamTokenError("replayed")
            self._remember(nonce, forget_after)

    def _binding(self, payload: bytes, call_sid: str) -> bytes:
        # The payload has a fixed length, so payload || call_sid is unambiguous.
        # surrogatepass: a CallSid from JSON may hold lone surrogates; encoding must not fail.
        message = payload + call_sid.encode("utf-8", "surrogatepass")
        return hmac.new(self._call_key, message, hashlib.sha256).digest()[:_BINDING_BYTES]

    def _tag(self, payload: bytes, binding: bytes) -> bytes:
        return hmac.new(self._tag_key, payload + binding, hashlib.sha256).digest()[:_TAG_BYTES]

    def _prune(self, now: float) -> None:
        """Forget nonces whose tokens `redeem` would now refuse as expired anyway.

        Pruning trusts the wall clock: if it is stepped back, a token pruned before the step
        may be accepted once more, within the step plus the TTL. Rare, short, and behind
        the Twilio signature, so not worth a second (monotonic) clock.
        """
        while self._expiries and self._expiries[0][0] < now:
            _, nonce = heapq.heappop(self._expiries)
            self._redeemed.pop(nonce, None)

    def _remember(self, nonce: bytes, forget_after: float) -> None:
        """Record a redeemed nonce; at the cap, drop the one closest to expiry.

        A dropped nonce's token could be redeemed again until it expires; reaching the cap
        needs that many *valid* tokens redeemed within one TTL, i.e. real traffic far beyond
        one process's capacity, so memory stays bounded rather than the cache exact.
        """
        while len(self._redeemed) >= self._max_replay_entries:
            _, dropped = heapq.heappop(self._expiries)
            self._redeemed.pop(dropped, None)
            logger.warning("stream token replay cache full; forgot the oldest redeemed entry")
        self._redeemed[nonce] = forget_after
        heapq.heappush(self._expiries, (forget_after, nonce))
