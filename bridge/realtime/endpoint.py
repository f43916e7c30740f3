"""A Realtime endpoint (URL, headers, dialect, audio format) and opening a socket to it.

Which provider needs what is `bridge.realtime.providers`' business; this module only
connects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from bridge.realtime.dialects import Dialect
from bridge.transcode import AudioFormat
from bridge.ws_frames import ClientFrames, IncomingBytes, is_utf8

# The close handshake may take this long before the socket is dropped: a hung-up call
# must release its paid session within a second.
CLOSE_TIMEOUT_S = 0.5
OPEN_TIMEOUT_S = 10.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_FIELD_CHARS = 256
# Past this much unsent (~25 s of caller audio) the Realtime service is not keeping up.
MAX_UNSENT_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RealtimeEndpoint:
    url: str = field(repr=False)  # may carry a key as ?token=...
    dialect: Dialect = Dialect.GA
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # Extra headers whose values name fields of the call ({call_sid}, {from}, ...); their
    # values may hold a gateway's key, so they are never shown either.
    header_templates: dict[str, str] = field(default_factory=dict, repr=False)
    provider: str = "custom"
    model: str = ""
    audio_format: AudioFormat = AudioFormat.PCMU

    @property
    def safe_url(self) -> str:
        """The URL without its query string or user:password@, which may carry a key:
        safe to log."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def secrets(self) -> list[str]:
        """Every value this endpoint sends that may be a secret, for redacting error text
        (a library error may quote a header it refused)."""
        query = [v for vs in parse_qs(urlsplit(self.url).query).values() for v in vs]
        values = [self.url, *query, *self.headers.values(), *self.header_templates.values()]
        for value in list(values):
            values += value.split()  # "Bearer <key>": the key alone too
        return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)

    def headers_for(self, call_fields: Mapping[str, str]) -> dict[str, str]:
        """The handshake headers for one call, its fields filled into the templates."""
        if not self.header_templates:
            return self.headers
        fields = {name: _header_safe(value) for name, value in call_fields.items()}
        headers = dict(self.headers)
        for name, template in self.header_templates.items():
            headers[name] = template.format_map(_Fields(fields))
        return headers


class _Fields(dict):
    """A field the call does not have (no From on an outbound leg) renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _header_safe(value: str) -> str:
    """A call's field as a header value: printable ASCII, one line, bounded. A caller's
    From is chosen by whoever placed the call; it must not be able to add headers."""
    value = value[:MAX_FIELD_CHARS]
    return "".join(c if " " <= c <= "~" else "?" for c in value)


class RealtimeConnection(ClientConnection):
    """websockets' client connection with a direct lane for the call's hot path: each
    message goes to a receiver as it is read (whole data frames by `FrameSplitter`), and
    `send_now` frames and writes at once. Through `recv()`/`send()` every message would
    cost a future, a task switch and an awaited drain, 50 times a second per call.
    Pings, the close handshake and the size limit stay websockets'."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._receiver: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []  # messages read before a receiver was set
        self._incoming = IncomingBytes(
            masked=False,
            on_message=self._message,
            to_websockets=super().data_received,
            opened=self._opened,
        )
        self._fragments: list[bytes] = []
        self._fragments_text = True
        self._frames = ClientFrames()

    def deliver_to(self, receiver: Callable[[bytes], None]) -> None:
        """Hand every message to `receiver` (its UTF-8 text, undecoded), starting with
        any read since the handshake."""
        self._receiver = receiver
        early, self._early = self._early, []
        for message in early:
            receiver(message)

    def data_received(self, data: bytes) -> None:
        self._incoming.feed(data)

    def _opened(self) -> int | None:
        if self.protocol.state is not State.OPEN:
            return None  # refused: the rest is the refusal's body, websockets' to read
        return self.protocol.max_message_size or 1 << 62

    def _message(self, payload: bytes, is_text: bool) -> None:
        if self.protocol.state is not State.OPEN:
            return  # read in the same chunk as the close: the session is over
        receiver = self._receiver
        if receiver is None:
            self._early.append(payload)
        else:
            receiver(payload)

    def process_event(self, event: Frame) -> None:  # type: ignore[override]
        if self.response is None or event.opcode not in _DATA_OPCODES:
            super().process_event(event)  # the handshake, and control frames
        elif event.fin and not self._fragments:
            self._message_checked(bytes(event.data), event.opcode is Opcode.TEXT)
        else:  # a fragmented message (the splitter leaves those to websockets)
            if not self._fragments:
                self._fragments_text = event.opcode is Opcode.TEXT
            self._fragments.append(bytes(event.data))
            if event.fin:
                message, self._fragments = b"".join(self._fragments), []
                self._message_checked(message, self._fragments_text)

    def _message_checked(self, message: bytes, is_text: bool) -> None:
        if is_text and not is_utf8(message):
            # Failed as websockets' recv() would (1007), and closed at once: the session
            # is unusable, and the call must hear of it now, not at the next ping.
            self.protocol.fail(1007, "invalid UTF-8")
            try:
                self.send_data()
            finally:
                self.transport.close()
            return
        self._message(message, is_text)

    def send_now(self, texts: list[str]) -> bool:
        """Send text messages in one write, without waiting. False only if the peer has
        stopped reading (too much unsent); on a connection that is closing they are
        dropped, as its reader reports the close."""
        transport = self.transport
        if self.protocol.state is not State.OPEN or transport.is_closing():
            return True
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            return False
        transport.write(self._frames.text_frames(texts))
        return True


_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class _NoRedirects(connect):
    """A Realtime endpoint that redirects elsewhere is refused, not followed: websockets
    would resend headers such as Azure's api-key or a gateway's key to the new host."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def open_realtime(
    endpoint: RealtimeEndpoint,
    call_fields: Mapping[str, str] | None = None,
    timeout_s: float = OPEN_TIMEOUT_S,
) -> RealtimeConnection:
    """Open a Realtime WebSocket for a call within `timeout_s` (at most OPEN_TIMEOUT_S);
    raises OSError, TimeoutError or websockets errors if that fails."""
    connection = await _NoRedirects(
        endpoint.url,
        additional_headers=endpoint.headers_for(call_fields or {}),
        open_timeout=min(timeout_s, OPEN_TIMEOUT_S),
        close_timeout=CLOSE_TIMEOUT_S,
        # Deltas are base64 audio: compression costs CPU on every frame and saves little.
        compression=None,
        max_size=16 * 1024 * 1024,
        # An HTTPS_PROXY meant for the Internet must not capture the loopback local agent.
        proxy=None if urlsplit(endpoint.url).hostname in _LOOPBACK else True,
        create_connection=RealtimeConnection,
    )
    assert isinstance(connection, RealtimeConnection)
    return connection
