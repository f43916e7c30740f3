"""Where a call's Realtime session lives: URL, headers and dialect, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect

from bridge.config import DEFAULT_REALTIME_BASE, Settings
from bridge.realtime.dialects import Dialect

# The close handshake may take this long before the socket is dropped: a hung-up call
# must release its paid session within a second.
CLOSE_TIMEOUT_S = 0.5
OPEN_TIMEOUT_S = 10.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class RealtimeEndpoint:
    url: str = field(repr=False)  # may carry a key as ?token=...
    dialect: Dialect = Dialect.GA
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def safe_url(self) -> str:
        """The URL without its query string, which may carry a key: safe to log."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def endpoint_from_settings(
    settings: Settings, local_agent_url: str | None = None
) -> RealtimeEndpoint:
    """The Realtime endpoint the settings describe (the local agent's when none is set)."""
    headers: dict[str, str] = {}
    if settings.openai_api_key is not None:
        headers["Authorization"] = "Bearer " + settings.openai_api_key.get_secret_value()
    if settings.realtime_dialect is Dialect.BETA:
        headers["OpenAI-Beta"] = "realtime=v1"
    if settings.realtime_url:
        url = settings.realtime_url
    elif settings.uses_local_agent:
        if local_agent_url is None:
            raise ValueError("no Realtime backend configured and no local agent running")
        url = local_agent_url + "?" + urlencode({"model": settings.openai_model})
    else:
        url = DEFAULT_REALTIME_BASE + "?" + urlencode({"model": settings.openai_model})
    return RealtimeEndpoint(url, settings.realtime_dialect, headers)


async def open_realtime(endpoint: RealtimeEndpoint) -> ClientConnection:
    """Open a Realtime WebSocket; raises OSError / websockets errors if that fails."""
    return await connect(
        endpoint.url,
        additional_headers=endpoint.headers,
        open_timeout=OPEN_TIMEOUT_S,
        close_timeout=CLOSE_TIMEOUT_S,
        # Deltas are base64 audio: compression costs CPU on every frame and saves little.
        compression=None,
        max_size=16 * 1024 * 1024,
        # An HTTPS_PROXY meant for the Internet must not capture the loopback local agent.
        proxy=None if urlsplit(endpoint.url).hostname in _LOOPBACK else True,
    )
