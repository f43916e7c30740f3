"""Form parsing for outsiders' requests: the stdlib's results, in slices, within limits."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twiml.request_body import (
    MAX_FIELD_BYTES,
    MAX_FORM_FIELDS,
    MAX_WEBHOOK_BYTES,
    SLICE_BYTES,
    RefusalLog,
    RequestRefused,
    parse_form,
)

FORM_TEXT = st.text(alphabet=st.sampled_from("ab=&+%2Fé%C3%A9%ZZ;\x00 "), max_size=300)


@settings(max_examples=300, deadline=None)
@given(FORM_TEXT)
def test_a_form_parses_as_the_stdlib_parses_it(text: str) -> None:
    body = text.encode()
    expected = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    assert asyncio.run(parse_form(body)) == expected


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=30))
def test_a_form_posted_by_twilio_reads_back_field_for_field(fields: dict[str, str]) -> None:
    body = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items()).encode()
    assert asyncio.run(parse_form(body)) == fields


async def test_a_large_form_is_decoded_with_the_event_loop_running_in_between() -> None:
    # The most expensive body under the caps: every byte an escape.
    field = "f=" + "%41" * (MAX_FIELD_BYTES // 3 - 1)
    body = "&".join([field] * (MAX_WEBHOOK_BYTES // len(field))).encode()
    turns = 0

    async def another_call() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(another_call())
    await asyncio.sleep(0)
    turns = 0
    fields = await parse_form(body)
    other.cancel()
    assert fields == {"f": "A" * (MAX_FIELD_BYTES // 3 - 1)}
    # The loop ran whenever a slice's worth was decoded (a field is never cut), so no call
    # waited on more than a slice and one field: ~0.6 ms at worst.
    assert turns >= len(body) // (SLICE_BYTES + MAX_FIELD_BYTES)


async def test_a_form_with_too_many_fields_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(RequestRefused) as refused:
        await parse_form(b"&".join([b"a=b"] * (MAX_FORM_FIELDS + 1)))
    assert refused.value.status == 413
    assert await parse_form(b"&".join([b"a=b"] * MAX_FORM_FIELDS)) == {"a": "b"}


async def test_a_field_over_its_cap_is_refused() -> None:
    with pytest.raises(RequestRefused) as refused:
        await parse_form(b"a=" + b"b" * MAX_FIELD_BYTES)
    assert refused.value.status == 413


def test_refusals_are_logged_as_a_count_not_a_line_each(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog(logging.getLogger("test.refusals"), interval_s=10.0)
    with caplog.at_level(logging.WARNING, "test.refusals"):
        log.refused("/voice: invalid Twilio signature", now=100.0)
        for i in range(999):
            log.refused("/voice: invalid Twilio signature", now=100.0 + i * 0.001)
        log.refused("/calls: no valid bearer token", now=105.0)
        log.refused("/voice: invalid Twilio signature", now=110.5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "refused requests: 1 × /voice: invalid Twilio signature",
        "refused requests: 1000 × /voice: invalid Twilio signature; "
        "1 × /calls: no valid bearer token",
    ]


async def test_the_tail_of_an_attack_is_logged_when_its_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RefusalLog(logging.getLogger("test.refusals"), interval_s=0.05)
    with caplog.at_level(logging.WARNING, "test.refusals"):
        for _ in range(3):
            log.refused("/voice: invalid Twilio signature")
        assert len(caplog.records) == 1  # the first at once, the others counted
        await asyncio.sleep(0.1)  # the interval ends with no refusal after it
    assert [r.getMessage() for r in caplog.records][1:] == [
        "refused requests: 2 × /voice: invalid Twilio signature"
    ]
