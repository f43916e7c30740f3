"""The audio path's WebSocket frames, read and written without per-frame machinery.

Each of a call's two sockets carries ~50 small data frames a second each way. The
websockets library reads every frame through a generator, a Frame object and an enum
lookup; here the common case, a whole unfragmented data frame within the size limit, is
read with a few byte operations and unmasked in C. Every other frame (control frames,
fragments, a frame masked the wrong way, text that is not UTF-8, one over the size limit
or over 64 KiB and still arriving) goes, as its exact bytes, to the websockets protocol
object that owns the connection, which judges it as it always would. That object is only
ever handed frames from their first byte, so it never starts reading mid-frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable

try:  # websockets' C helper; the pure-Python one gives the same bytes, slower
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

# First byte of a whole (FIN) text or binary frame with no extension bits.
_WHOLE_TEXT, _WHOLE_BINARY = 0x81, 0x82
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
# A frame longer than this is not held until whole but passed on as it arrives.
LARGE_FRAME = 64 * 1024


class FrameSplitter:
    """Cuts a connection's incoming bytes into frames: whole data frames become messages,
    anything else is passed on as raw bytes, in the order it came."""

    def __init__(self, *, masked: bool, max_size: int) -> None:
        self._masked = masked  # a client's frames are masked, a server's never
        self._max_size = max_size
        self._partial = b""  # the start of a frame still arriving
        self._fragmented = False  # inside a fragmented message: all of it goes on raw
        self._passing_all = False  # after a frame too large to hold: everything goes on
        self._passing = 0  # bytes still to come of a large frame already passed on

    def feed(
        self,
        data: bytes,
        on_message: Callable[[bytes, bool], None],
        on_other: Callable[[bytes], None],
    ) -> None:
        """Hand each whole data frame's payload to `on_message` (with True for text) and
        every other byte to `on_other`."""
        if self._passing_all:
            on_other(data)
            return
        pos, end = 0, len(data)
        if self._passing:
            pos = min(end, self._passing)
            self._passing -= pos
            on_other(data[:pos])
        elif self._partial:
            data, self._partial = self._partial + data, b""
            end = len(data)
        while end - pos >= 2:
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            masked = second & 0x80
            if masked:
                head += 4
            if length > self._max_size:
                # Not held until whole: the protocol object refuses it (1009) from its header.
                self._passing_all = True
                on_other(data[pos:])
                return
            stop = pos + head + length
            if stop > end:
                if length <= LARGE_FRAME:
                    break  # held until whole
                # Not held (joining its pieces again at each read would cost the square of
                # its size): it goes on as it arrives, and websockets reads it.
                self._note_fragments(first)
                self._passing = stop - end
                on_other(data[pos:])
                return
            if (
                first in (_WHOLE_TEXT, _WHOLE_BINARY)
                and bool(masked) == self._masked
                and not self._fragmented
            ):
                payload = data[pos + head : stop]
                if masked:
                    payload = apply_mask(payload, data[pos + head - 4 : pos + head])
                if first == _WHOLE_BINARY or is_utf8(payload):
                    on_message(payload, first == _WHOLE_TEXT)
                else:  # the protocol object's own path refuses it (1007)
                    on_other(data[pos:stop])
            else:
                self._note_fragments(first)
                on_other(data[pos:stop])
            pos = stop
        if pos < end:
            self._partial = data[pos:]

    def _note_fragments(self, first: int) -> None:
        """Follow fragmented messages through the frames passed on: all of one goes on."""
        opcode = first & 0x0F
        if opcode in (_OP_TEXT, _OP_BINARY) and not first & 0x80:
            self._fragmented = True
        elif opcode == _OP_CONTINUATION and first & 0x80:
            self._fragmented = False


def is_utf8(data: bytes) -> bool:
    """Whether a text message is valid UTF-8, as RFC 6455 requires (ASCII at once)."""
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class IncomingBytes:
    """A connection's incoming bytes from its first: the HTTP handshake's head goes to
    websockets exactly, up to its blank line; if that opened the connection, what follows
    goes through a `FrameSplitter`, so websockets and the splitter never share a frame."""

    MAX_HEAD = 64 * 1024  # a longer head is websockets' to refuse

    def __init__(
        self,
        *,
        masked: bool,
        on_message: Callable[[bytes, bool], None],
        to_websockets: Callable[[bytes], None],
        opened: Callable[[], int | None],
    ) -> None:
        self._masked = masked
        self._on_message = on_message
        self._to_websockets = to_websockets
        self._opened = opened  # after the head: the message size limit if it opened
        self._head = b""
        self._past_head = False
        self._splitter: FrameSplitter | None = None

    def feed(self, data: bytes) -> None:
        splitter = self._splitter
        if splitter is not None:
            splitter.feed(data, self._on_message, self._to_websockets)
            return
        if self._past_head or len(self._head) > self.MAX_HEAD:
            self._to_websockets(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            self._to_websockets(data)
            return
        cut = end + 4 - (len(self._head) - len(data))
        self._head, self._past_head = b"", True
        self._to_websockets(data[:cut])
        max_size = self._opened()
        if max_size is not None:
            self._splitter = FrameSplitter(masked=self._masked, max_size=max_size)
        if cut < len(data):
            self.feed(data[cut:])


def server_text_frames(texts: list[str]) -> bytes:
    """Text frames as a server sends them (unmasked), ready for one write."""
    frames = b""
    for text in texts:
        payload = text.encode()
        frames += _header(len(payload), 0) + payload
    return frames


class ClientFrames:
    """Text frames as a client sends them: each masked with a fresh random key (RFC 6455
    5.3), the keys drawn from the OS's CSPRNG a page at a time rather than a system call
    per frame."""

    def __init__(self) -> None:
        self._keys = b""
        self._next = 0

    def text_frames(self, texts: list[str]) -> bytes:
        frames = b""
        for text in texts:
            payload = text.encode()
            at = self._next
            if at >= len(self._keys):
                self._keys, at = os.urandom(4096), 0
            key = self._keys[at : at + 4]
            self._next = at + 4
            frames += _header(len(payload), 0x80) + key + apply_mask(payload, key)
        return frames


def _header(length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((_WHOLE_TEXT, mask_bit | length))
    if length < 1 << 16:
        return bytes((_WHOLE_TEXT, mask_bit | 126, length >> 8, length & 0xFF))
    return bytes((_WHOLE_TEXT, mask_bit | 127)) + length.to_bytes(8, "big")
