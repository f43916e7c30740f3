"""Per-call stream tokens: only a fresh, genuine, unused token for this very call admits a
stream, and no input at all makes `redeem` fail with anything but `StreamTokenError`."""

from __future__ import annotations

import logging
import pickle
import re
import string
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twiml.answer import connect_stream
from twiml.stream_token import TOKEN_LENGTH, StreamTokenError, StreamTokens

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
CALL = "CA" + "1" * 32
OTHER_CALL = "CA" + "2" * 32
T0 = 1_700_000_000.25
TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> StreamTokens:
    return StreamTokens.from_auth_token(AUTH_TOKEN, clock=clock)


def reason_of(tokens: StreamTokens, token: object, call_sid: object = CALL) -> str:
    with pytest.raises(StreamTokenError) as info:
        tokens.redeem(token, call_sid)  # type: ignore[arg-type]
    return info.value.reason


def test_round_trip(tokens: StreamTokens) -> None:
    tokens.redeem(tokens.issue(CALL), CALL)


def test_token_is_compact_and_safe_in_urls_and_xml(tokens: StreamTokens) -> None:
    for _ in range(200):
        token = tokens.issue(CALL)
        assert len(token) == TOKEN_LENGTH < 200
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
        assert CALL not in token  # bound through the MAC, not carried


def test_tokens_are_unique_per_issue(tokens: StreamTokens) -> None:
    assert len({tokens.issue(CALL) for _ in range(1000)}) == 1000


def test_token_survives_the_twiml_round_trip(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    xml = connect_stream("wss://bridge.example.com/media-stream", {tokens.PARAMETER: token}, None)
    [param] = ET.fromstring(xml).findall("Connect/Stream/Parameter")
    assert param.get("name") == StreamTokens.PARAMETER == "token"
    tokens.redeem(param.get("value"), CALL)


def test_token_is_bound_to_its_call(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    assert reason_of(tokens, token, OTHER_CALL) == "wrong_call"
    assert reason_of(tokens, token, CALL[:-1]) == "wrong_call"
    assert reason_of(tokens, token, CALL + "1") == "wrong_call"
    assert reason_of(tokens, token, "") == "wrong_call"
    assert reason_of(tokens, token, None) == "wrong_call"
    # Trying it on the wrong call did not burn it for the right one.
    tokens.redeem(token, CALL)


@given(st.text(min_size=1), st.text(min_size=1))
@settings(max_examples=200)
def test_any_call_sid_round_trips_and_binds(call_sid: str, other: str) -> None:
    """Including lone surrogates, which a CallSid parsed from JSON may hold."""
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN)
    token = tokens.issue(call_sid)
    if other != call_sid:
        assert reason_of(tokens, token, other) == "wrong_call"
    tokens.redeem(token, call_sid)


def test_issue_refuses_an_empty_call_sid(tokens: StreamTokens) -> None:
    with pytest.raises(ValueError):
        tokens.issue("")


def test_expires_after_ttl(clock: FakeClock) -> None:
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN, ttl_s=60.0, clock=clock)
    at_limit = tokens.issue(CALL)
    too_late = tokens.issue(CALL)
    # Issue time is stored in whole seconds, rounded down: the token lives 59-60 s.
    clock.now = int(T0) + 60.0
    tokens.redeem(at_limit, CALL)
    clock.now = int(T0) + 60.001
    assert reason_of(tokens, too_late) == "expired"


def test_default_ttl_is_five_minutes(tokens: StreamTokens, clock: FakeClock) -> None:
    fresh, stale = tokens.issue(CALL), tokens.issue(CALL)
    clock.now = T0 + 290
    tokens.redeem(fresh, CALL)
    clock.now = T0 + 301
    assert reason_of(tokens, stale) == "expired"


def test_future_dated_tokens_are_refused_beyond_the_skew(clock: FakeClock) -> None:
    def issued_at(now: float) -> str:
        return StreamTokens.from_auth_token(AUTH_TOKEN, clock=FakeClock(now)).issue(CALL)

    verifier = StreamTokens.from_auth_token(AUTH_TOKEN, clock=clock)
    verifier.redeem(issued_at(T0 + 25), CALL)  # a replica whose clock runs a little fast
    assert reason_of(verifier, issued_at(T0 + 31)) == "expired"
    assert reason_of(verifier, issued_at(T0 + 86_400)) == "expired"


def test_single_character_changes_are_all_rejected(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    for i, original in enumerate(token):
        for replacement in TOKEN_CHARS + ".=+/ \x00é":
            if replacement == original:
                continue
            forged = token[:i] + replacement + token[i + 1 :]
            assert reason_of(tokens, forged) in {"malformed", "bad_signature"}, (i, replacement)
        # Deletions and insertions too.
        assert reason_of(tokens, token[:i] + token[i + 1 :]) == "malformed"
        assert reason_of(tokens, token[:i] + "A" + token[i:]) == "malformed"
    # Thousands of forgeries later the genuine token still works, exactly once.
    assert tokens.replay_cache_size == 0
    tokens.redeem(token, CALL)


def test_changes_to_the_signature_part_never_pass_for_wrong_call(tokens: StreamTokens) -> None:
    """The tag covers the call binding, so tampering reads as forgery, not as another call."""
    token = tokens.issue(CALL)
    payload_chars = token.index(".") + 1
    for i in range(payload_chars, len(token)):
        for replacement in TOKEN_CHARS:
            if replacement != token[i]:
                forged = token[:i] + replacement + token[i + 1 :]
                assert reason_of(tokens, forged) == "bad_signature"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("garbage", "malformed"),
        (".", "malformed"),
        ("A" * 28 + "." + "A" * 32, "malformed"),  # version byte 0
        ("A" * TOKEN_LENGTH, "malformed"),
        ("x" * 10_000_000, "malformed"),
        ("é" * TOKEN_LENGTH, "malformed"),
        ("\U0001f600" * 5, "malformed"),
        ("\ud800" * TOKEN_LENGTH, "malformed"),
        ("١" * 28 + "." + "١" * 32, "malformed"),  # Arabic-Indic digits are not [0-9]
        (b"bytes", "malformed"),
        (12345, "malformed"),
        (["list"], "malformed"),
        ({"token": "x"}, "malformed"),
    ],
)
def test_malformed_inputs(tokens: StreamTokens, token: object, reason: str) -> None:
    assert reason_of(tokens, token) == reason


def test_padded_or_reencoded_forms_are_refused(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    for variant in (token + "=", token + "\n", " " + token, token.replace("-", "+"), token + "."):
        if variant != token:
            assert reason_of(tokens, variant) in {"malformed", "bad_signature"}


@given(st.text(max_size=300))
@settings(max_examples=500)
def test_arbitrary_strings_only_ever_raise_stream_token_errors(text: str) -> None:
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN)
    with pytest.raises(StreamTokenError) as info:
        tokens.redeem(text, CALL)
    assert info.value.reason in {"missing", "malformed"}
    # The message depends on the reason only, never on the input.
    assert str(info.value) == str(StreamTokenError(info.value.reason))


@given(st.from_regex(r"\A[A-Za-z0-9_-]{28}\.[A-Za-z0-9_-]{32}\Z"), st.text())
@settings(max_examples=300)
def test_well_shaped_forgeries_fail_the_signature(text: str, call_sid: str) -> None:
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN)
    with pytest.raises(StreamTokenError) as info:
        tokens.redeem(text, call_sid)
    assert info.value.reason in {"malformed", "bad_signature"}  # malformed: bad version


@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text())))
def test_non_strings_only_ever_raise_stream_token_errors(value: object) -> None:
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN)
    assert reason_of(tokens, value) in {"missing", "malformed"}


def test_replay_is_rejected(tokens: StreamTokens, clock: FakeClock) -> None:
    token = tokens.issue(CALL)
    tokens.redeem(token, CALL)
    assert reason_of(tokens, token) == "replayed"
    clock.now += 10
    assert reason_of(tokens, token) == "replayed"
    # Once past its TTL it is refused as expired, whether or not the cache still knows it.
    clock.now = T0 + 400
    assert reason_of(tokens, token) == "expired"


def test_replicas_sharing_an_auth_token_accept_each_others_tokens(clock: FakeClock) -> None:
    a = StreamTokens.from_auth_token(AUTH_TOKEN, clock=clock)
    b = StreamTokens.from_auth_token(AUTH_TOKEN, clock=clock)
    token = a.issue(CALL)
    b.redeem(token, CALL)
    assert reason_of(b, token) == "replayed"
    # Documented limit: the replay cache is per process, so another replica (or this one
    # after a restart) accepts the same token once more until it expires.
    a.redeem(token, CALL)
    assert reason_of(a, token) == "replayed"
    clock.now = T0 + 301
    assert reason_of(StreamTokens.from_auth_token(AUTH_TOKEN, clock=clock), token) == "expired"


def test_a_different_auth_token_rejects(tokens: StreamTokens, clock: FakeClock) -> None:
    other = StreamTokens.from_auth_token(AUTH_TOKEN[:-1] + "0", clock=clock)
    assert reason_of(other, tokens.issue(CALL)) == "bad_signature"


def test_explicit_secret(clock: FakeClock) -> None:
    secret = bytes(range(32))
    a, b = StreamTokens(secret, clock=clock), StreamTokens(secret, clock=clock)
    b.redeem(a.issue(CALL), CALL)
    # The explicit secret is not the auth-token-derived one, even for the same bytes.
    derived = StreamTokens.from_auth_token(secret.decode("latin-1"), clock=clock)
    assert reason_of(derived, a.issue(CALL)) == "bad_signature"


@pytest.mark.parametrize("secret", [b"", b"short", "a str, not bytes" * 4])
def test_weak_or_wrongly_typed_secrets_are_refused(secret: object) -> None:
    with pytest.raises(ValueError):
        StreamTokens(secret)  # type: ignore[arg-type]


def test_an_empty_auth_token_is_refused() -> None:
    """HMAC under an empty key would make the secret a public constant."""
    with pytest.raises(ValueError):
        StreamTokens.from_auth_token("")


@pytest.mark.parametrize("ttl_s", [0, -1, float("nan"), float("inf")])
def test_nonsense_ttls_are_refused(ttl_s: float) -> None:
    with pytest.raises(ValueError):
        StreamTokens(bytes(32), ttl_s=ttl_s)


def test_replay_cache_forgets_what_has_expired(clock: FakeClock) -> None:
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN, ttl_s=60.0, clock=clock)
    for _ in range(50):
        tokens.redeem(tokens.issue(CALL), CALL)
    assert tokens.replay_cache_size == 50
    clock.now = int(T0) + 60.0  # the first batch is still acceptable: still remembered
    tokens.redeem(tokens.issue(CALL), CALL)
    assert tokens.replay_cache_size == 51
    clock.now = int(T0) + 61.0  # now it would be refused as expired: forgotten
    tokens.redeem(tokens.issue(CALL), CALL)
    assert tokens.replay_cache_size == 2


def test_replay_cache_is_capped_dropping_the_oldest(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = StreamTokens.from_auth_token(AUTH_TOKEN, clock=clock, max_replay_entries=3)
    issued = []
    for _ in range(5):
        issued.append(tokens.issue(CALL))
        clock.now += 1
    # Redeemed out of issue order: the cap drops the entries closest to expiry.
    order = [issued[4], issued[0], issued[3], issued[1], issued[2]]
    with caplog.at_level(logging.WARNING, logger="twiml.stream_token"):
        for token in order:
            tokens.redeem(token, CALL)
            assert tokens.replay_cache_size <= 3
    assert tokens.replay_cache_size == 3
    for token in (issued[2], issued[3], issued[4]):
        assert reason_of(tokens, token) == "replayed"
    # The cost of the cap: a dropped token is accepted once more while it is still fresh.
    tokens.redeem(issued[0], CALL)
    assert caplog.records, "hitting the cap is logged"
    for record in caplog.records:
        assert not any(token in record.getMessage() for token in issued)


def test_errors_do_not_reveal_the_token(tokens: StreamTokens, clock: FakeClock) -> None:
    token = tokens.issue(CALL)
    errors = []

    def attempt(candidate: str, call_sid: str) -> None:
        with pytest.raises(StreamTokenError) as info:
            tokens.redeem(candidate, call_sid)
        errors.append(info.value)

    attempt(token[:-1] + "~", CALL)
    attempt(token[:-1] + ("B" if token[-1] == "A" else "A"), CALL)
    attempt(token, OTHER_CALL)
    tokens.redeem(token, CALL)
    attempt(token, CALL)
    clock.now += 1000
    attempt(token, CALL)
    assert [e.reason for e in errors] == [
        "malformed",
        "bad_signature",
        "wrong_call",
        "replayed",
        "expired",
    ]
    for e in errors:
        for text in (str(e), repr(e)):
            assert token[:20] not in text and token[-20:] not in text
    assert AUTH_TOKEN not in repr(tokens)


def test_errors_pickle_with_their_reason() -> None:
    error = pickle.loads(pickle.dumps(StreamTokenError("replayed")))
    assert isinstance(error, StreamTokenError) and error.reason == "replayed"
