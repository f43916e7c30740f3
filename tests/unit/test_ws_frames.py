"""FrameSplitter against websockets' own sans-I/O parser as the reference.

The splitter hands whole data frames to a callback and every other byte to websockets;
whatever it does, the two together must see the same messages, in the same order, as
websockets alone would, and every control frame must still reach websockets."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side
from websockets.streams import StreamReader

from bridge.ws_frames import LARGE_FRAME, ClientFrames, FrameSplitter, server_text_frames

BIG = 1 << 20  # no generated message is near this
SIZES = [0, 1, 2, 125, 126, 127, 1000, 65535, 65536, 65537]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# One item of the stream: a data message (whole or in fragments) or a control frame.
@dataclass
class Message:
    opcode: Opcode
    data: bytes
    cuts: list[int] = field(default_factory=list)  # fragment boundaries; [] = one frame
    controls: list[Frame] = field(default_factory=list)  # pings/pongs between fragments


@dataclass
class Control:
    frame: Frame


controls = st.builds(
    lambda op, data: Control(Frame(op, data)),
    st.sampled_from([Opcode.PING, Opcode.PONG]),
    st.binary(max_size=125),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
    if opcode is Opcode.TEXT and draw(st.booleans()):
        data = draw(st.text(max_size=40)).encode()
    else:
        size = draw(st.sampled_from(SIZES) | st.integers(0, 300))
        data = payload(size, draw(st.integers(0, 2**16)))
    cuts: list[int] = []
    inner: list[Frame] = []
    if draw(st.integers(0, 3)) == 0:  # fragmented, possibly with empty fragments
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), min_size=1, max_size=4)))
        inner = [c.frame for c in draw(st.lists(controls, max_size=len(cuts)))]
    return Message(opcode, data, cuts, inner)


streams = st.lists(st.one_of(messages(), messages(), controls), max_size=12)


def serialized_frames(items: list, *, mask: bool, close: bool) -> list[tuple[bytes, bool]]:
    """Each frame's bytes, and whether it is one the splitter must take (a whole message)."""
    out: list[tuple[bytes, bool]] = []

    def put(frame: Frame, whole: bool = False) -> None:
        out.append((frame.serialize(mask=mask, extensions=[]), whole))

    for item in items:
        if isinstance(item, Control):
            put(item.frame)
        elif not item.cuts:
            put(Frame(item.opcode, item.data), whole=takes_fast_path(item))
        else:
            bounds = [0, *item.cuts, len(item.data)]
            pieces = [item.data[a:b] for a, b in itertools.pairwise(bounds)]
            pending = list(item.controls)
            for i, piece in enumerate(pieces):
                opcode = item.opcode if i == 0 else Opcode.CONT
                put(Frame(opcode, piece, fin=i == len(pieces) - 1))
                if pending and i < len(pieces) - 1:
                    put(pending.pop(0))
    if close:
        put(Frame(Opcode.CLOSE, Close(CloseCode.NORMAL_CLOSURE, "bye").serialize()))
    return out


def takes_fast_path(item: Message) -> bool:
    """A whole message, and text only if valid UTF-8 (websockets' side refuses the rest)."""
    if item.cuts:
        return False
    if item.opcode is Opcode.TEXT:
        try:
            item.data.decode()
        except UnicodeDecodeError:
            return False
    return True


def serialize(items: list, *, mask: bool, close: bool) -> bytes:
    return b"".join(data for data, _ in serialized_frames(items, mask=mask, close=close))


def expected_messages(items: list) -> list[tuple[bytes, bool]]:
    return [(i.data, i.opcode is Opcode.TEXT) for i in items if isinstance(i, Message)]


def expected_controls(items: list) -> list[tuple[Opcode, bytes]]:
    found = []
    for item in items:
        frames = [item.frame] if isinstance(item, Control) else item.controls[: len(item.cuts)]
        found += [(f.opcode, f.data) for f in frames]
    return found


class Pair:
    """A splitter feeding what it passes on to a websockets protocol, as the bridge wires
    them; `arrived` is every message in the order either of them produced it."""

    def __init__(self, *, masked: bool, max_size: int) -> None:
        self.splitter = FrameSplitter(masked=masked, max_size=max_size)
        self.reference = Protocol(Side.SERVER if masked else Side.CLIENT, max_size=max_size)
        self.arrived: list[tuple[bytes, bool]] = []
        self.controls: list[tuple[Opcode, bytes]] = []
        self.raw: list[bytes] = []
        self.by_splitter = 0
        self._fragments: list[Frame] = []

    def feed(self, data: bytes) -> None:
        self.splitter.feed(data, self._message, self._other)

    def _message(self, data: bytes, is_text: bool) -> None:
        self.by_splitter += 1
        self.arrived.append((bytes(data), is_text))

    def _other(self, data: bytes) -> None:
        self.raw.append(bytes(data))
        self.reference.receive_data(data)
        for event in self.reference.events_received():
            assert isinstance(event, Frame)
            if event.opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
                self.controls.append((event.opcode, event.data))
                continue
            self._fragments.append(event)
            if event.fin:
                first = self._fragments[0]
                whole = b"".join(f.data for f in self._fragments)
                self.arrived.append((whole, first.opcode is Opcode.TEXT))
                self._fragments = []

    def sent_frames(self) -> list[Frame]:
        """What the reference wrote back (pongs, its close), parsed by a peer."""
        side = Side.CLIENT if self.reference.side is Side.SERVER else Side.SERVER
        peer = Protocol(side, max_size=None)
        peer.receive_data(b"".join(self.reference.data_to_send()))
        return [e for e in peer.events_received() if isinstance(e, Frame)]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@FAST
@given(
    items=streams,
    masked=st.booleans(),
    close=st.booleans(),
    points=st.lists(st.integers(0, 1 << 20), max_size=20),
)
def test_splitter_and_websockets_together_see_every_message_in_order(
    items: list, masked: bool, close: bool, points: list[int]
) -> None:
    stream = serialize(items, mask=masked, close=close)
    pair = Pair(masked=masked, max_size=BIG)
    for piece in cut(stream, points):
        pair.feed(piece)

    assert pair.reference.parser_exc is None
    assert pair.arrived == expected_messages(items)
    sent_controls = expected_controls(items)
    if close:
        sent_controls.append((Opcode.CLOSE, Close(1000, "bye").serialize()))
    assert pair.controls == sent_controls
    # the common case never touches websockets: whole frames go by the fast path (a large
    # one only if it came in one piece: pieces of it are passed on as they arrive)
    whole = [i for i in items if isinstance(i, Message) and takes_fast_path(i)]
    small = [i for i in whole if len(i.data) <= LARGE_FRAME]
    assert len(small) <= pair.by_splitter <= len(whole)
    # every ping was answered with a pong of its payload, in order (and a close echoed)
    replies = [(f.opcode, f.data) for f in pair.sent_frames()]
    pings = [data for op, data in sent_controls if op is Opcode.PING]
    assert [d for op, d in replies if op is Opcode.PONG] == pings
    if close:
        assert replies[-1][0] is Opcode.CLOSE


@FAST
@given(items=streams, masked=st.booleans(), points=st.lists(st.integers(0, 1 << 20)))
def test_what_goes_on_raw_is_exactly_the_non_fast_path_frames(
    items: list, masked: bool, points: list[int]
) -> None:
    """The bytes passed on are whole frames, unchanged: concatenated they are the stream
    with the fast-path frames taken out."""
    frames = serialized_frames(items, mask=masked, close=False)
    pair = Pair(masked=masked, max_size=BIG)
    for piece in cut(b"".join(data for data, _ in frames), points):
        pair.feed(piece)
    # Frame by frame: what is not a whole message is passed on; a whole message is passed
    # on only if it is large (and came in pieces), else it went by the fast path.
    raw = b"".join(pair.raw)
    at = 0
    for data, whole in frames:
        if raw.startswith(data, at) and (not whole or len(data) > LARGE_FRAME):
            at += len(data)
        else:
            assert whole, "a frame that is not a whole message went missing"
    assert at == len(raw)
    # and what is passed on, taken together, is whole frames: websockets never starts
    # reading in the middle of one
    assert whole_frames(raw, masked) or not raw


@FAST
@given(
    before=st.lists(messages(), max_size=4),
    size=st.integers(201, 70000),
    masked=st.booleans(),
    after=st.binary(max_size=300),
    points=st.lists(st.integers(0, 1 << 20), max_size=10),
)
def test_a_frame_over_max_size_fails_the_connection_with_1009(
    before: list, size: int, masked: bool, after: bytes, points: list[int]
) -> None:
    before = [m for m in before if len(m.data) <= 200]
    big = Frame(Opcode.BINARY, payload(size, size)).serialize(mask=masked, extensions=[])
    # anything may follow, even bytes that would parse as whole frames
    tail = server_text_frames(["after"]) if not masked else ClientFrames().text_frames(["a"])
    stream = serialize(before, mask=masked, close=False) + big + tail + after
    pair = Pair(masked=masked, max_size=200)
    for piece in cut(stream, points):
        pair.feed(piece)
    assert pair.arrived == expected_messages(before)
    assert pair.reference.close_sent is not None
    assert pair.reference.close_sent.code == CloseCode.MESSAGE_TOO_BIG


def test_an_oversized_declared_length_is_refused_from_the_header_alone() -> None:
    for length_bytes in (
        b"\x7f" + (64 * 1024 + 1).to_bytes(8, "big"),
        b"\x7f" + (1 << 40).to_bytes(8, "big"),
    ):
        header = bytes([0x81]) + bytes([length_bytes[0] | 0x80]) + length_bytes[1:] + b"abcd"
        pair = Pair(masked=True, max_size=64 * 1024)
        pair.feed(header)  # no payload at all: nothing is held back waiting for it
        assert pair.arrived == []
        assert pair.reference.close_sent is not None
        assert pair.reference.close_sent.code == 1009
        assert pair.raw == [header]
        later = ClientFrames().text_frames(["later"])
        pair.feed(later)  # everything after goes on too, even a good frame
        assert pair.arrived == []
        assert pair.raw == [header, later]


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("max_size", [0, 125, 126, 65535, 65536])
def test_a_frame_of_exactly_max_size_is_a_message_one_byte_more_is_refused(
    masked: bool, max_size: int
) -> None:
    fits = Frame(Opcode.TEXT, b"a" * max_size).serialize(mask=masked, extensions=[])
    pair = Pair(masked=masked, max_size=max_size)
    pair.feed(fits)
    assert pair.arrived == [(b"a" * max_size, True)] and pair.by_splitter == 1
    too_big = Frame(Opcode.TEXT, b"a" * (max_size + 1)).serialize(mask=masked, extensions=[])
    pair.feed(too_big[:10])  # the header is enough
    assert pair.reference.close_sent is not None
    assert pair.reference.close_sent.code == CloseCode.MESSAGE_TOO_BIG
    assert pair.arrived == [(b"a" * max_size, True)]


@pytest.mark.parametrize("masked", [True, False])
def test_a_wrongly_masked_frame_goes_on_raw_and_websockets_fails_with_1002(masked: bool) -> None:
    wrong = Frame(Opcode.TEXT, b"hello").serialize(mask=not masked, extensions=[])
    good = Frame(Opcode.TEXT, b"before").serialize(mask=masked, extensions=[])
    pair = Pair(masked=masked, max_size=BIG)
    pair.feed(good + wrong)
    assert pair.arrived == [(b"before", True)]
    assert pair.raw == [wrong]
    assert pair.reference.close_sent is not None
    assert pair.reference.close_sent.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
@pytest.mark.parametrize("masked", [True, False])
def test_a_frame_with_an_rsv_bit_goes_on_raw(rsv: int, masked: bool) -> None:
    frame = bytearray(Frame(Opcode.BINARY, b"\x01\x02").serialize(mask=masked, extensions=[]))
    frame[0] |= rsv
    pair = Pair(masked=masked, max_size=BIG)
    pair.feed(bytes(frame))
    assert pair.by_splitter == 0
    assert pair.raw == [bytes(frame)]
    assert pair.reference.close_sent is not None
    assert pair.reference.close_sent.code == CloseCode.PROTOCOL_ERROR


def test_a_partial_frame_is_held_until_whole() -> None:
    stream = ClientFrames().text_frames(["x" * 300, "y"])
    pair = Pair(masked=True, max_size=BIG)
    for byte in stream:
        pair.feed(bytes([byte]))
    assert pair.arrived == [(b"x" * 300, True), (b"y", True)]
    assert pair.raw == []


TEXTS = ["", "hi", "héllo wörld ☎ 📞", "x" * 125, "y" * 126, "z" * 65535, "w" * 65536]
TEXTS += ["é" * 63, "€" * 42]  # multi-byte: 126 bytes, 126 bytes


def whole_frames(data: bytes, masked: bool) -> list[Frame]:
    """`data` cut into frames by websockets' frame parser; fails unless it is whole frames."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        try:
            next(Frame.parse(reader.read_exact, mask=masked))
        except StopIteration as done:
            frames.append(done.value)
        except EOFError:
            raise AssertionError("a frame cut short") from None
    return frames


def parsed(data: bytes, side: Side) -> list[Frame]:
    reference = Protocol(side, max_size=None)
    reference.receive_data(data)
    assert reference.parser_exc is None
    return [e for e in reference.events_received() if isinstance(e, Frame)]


def test_server_text_frames_parse_back_to_the_same_texts() -> None:
    frames = parsed(server_text_frames(TEXTS), Side.CLIENT)
    assert [(f.opcode, f.fin, f.data.decode()) for f in frames] == [
        (Opcode.TEXT, True, t) for t in TEXTS
    ]
    assert server_text_frames([]) == b""


def test_client_frames_parse_back_to_the_same_texts() -> None:
    frames = parsed(ClientFrames().text_frames(TEXTS), Side.SERVER)  # a server demands masks
    assert [(f.opcode, f.fin, f.data.decode()) for f in frames] == [
        (Opcode.TEXT, True, t) for t in TEXTS
    ]


def mask_keys(data: bytes) -> list[bytes]:
    keys, pos = [], 0
    while pos < len(data):
        length, head = data[pos + 1] & 0x7F, 2
        assert data[pos + 1] & 0x80
        if length == 126:
            length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        keys.append(data[pos + head : pos + head + 4])
        pos += head + 4 + length
    return keys


def test_client_frames_use_a_fresh_mask_key_each_frame() -> None:
    frames = ClientFrames()
    keys = mask_keys(frames.text_frames(["a", "b"])) + mask_keys(frames.text_frames(["c"]))
    # beyond one page of keys (4096 bytes = 1024 frames), still fresh
    keys += mask_keys(frames.text_frames(["k"] * 1100))
    assert len(keys) == 1103
    assert keys[0] != keys[1] != keys[2]
    assert len(set(keys)) > 1090  # 32-bit random keys: a few collisions at most


@pytest.mark.parametrize("masked", [True, False])
def test_a_large_frame_is_passed_on_as_it_arrives_not_held(masked: bool) -> None:
    """Holding a 15 MiB event until whole would join its pieces again at every read (the
    square of its size, the event loop blocked meanwhile): its pieces go on as they come."""
    big = Frame(Opcode.TEXT, b"x" * (LARGE_FRAME * 4)).serialize(mask=masked, extensions=[])
    pair = Pair(masked=masked, max_size=BIG)
    piece = 16 * 1024
    for at in range(0, len(big), piece):
        pair.feed(big[at : at + piece])
        assert sum(map(len, pair.raw)) == min(at + piece, len(big))  # nothing held back
    pair.feed(ClientFrames().text_frames(["next"]) if masked else server_text_frames(["next"]))
    assert pair.arrived == [(b"x" * (LARGE_FRAME * 4), True), (b"next", True)]
    assert pair.by_splitter == 1  # the small one after it: the fast path again
