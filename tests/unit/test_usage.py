"""Per-call token usage and estimated cost, as the operator reads it in the call's log line.

Expected costs are worked out by hand in the comments (tokens x USD per 1M tokens), not
with the code's own formula.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.usage import (
    DEFAULT_PRICES,
    LOCAL_AGENT_MODEL,
    CallUsage,
    ModelPrices,
    PriceTable,
    TokenCounts,
    counts_from_usage,
    parse_price_overrides,
)

# A response.done usage as the Realtime API sends it mid-call: most of the input is the
# cached conversation so far, and the answer is mostly audio.
REAL_USAGE: dict[str, Any] = {
    "total_tokens": 2533,
    "input_tokens": 2101,
    "output_tokens": 432,
    "input_token_details": {
        "text_tokens": 1245,
        "audio_tokens": 856,
        "image_tokens": 0,
        "cached_tokens": 1792,
        "cached_tokens_details": {"text_tokens": 1216, "audio_tokens": 576, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 87, "audio_tokens": 345},
}


def response_done(usage: object) -> dict[str, Any]:
    return {"id": "resp_1", "object": "realtime.response", "status": "completed", "usage": usage}


def usage(
    text: int, audio: int, cached_text: int, cached_audio: int, out_text: int, out_audio: int
) -> dict[str, Any]:
    return {
        "total_tokens": text + audio + out_text + out_audio,
        "input_tokens": text + audio,
        "output_tokens": out_text + out_audio,
        "input_token_details": {
            "text_tokens": text,
            "audio_tokens": audio,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio},
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


def three_turn_call() -> CallUsage:
    """Totals: in 1200 (text 300 of which 100 cached, audio 900 of which 300 cached),
    out 2100 (text 100, audio 2000)."""
    call = CallUsage()
    call.add_response_done(response_done(usage(100, 300, 0, 0, 30, 700)))
    call.add_response_done(response_done(usage(100, 300, 50, 150, 30, 600)))
    call.add_response_done(response_done(usage(100, 300, 50, 150, 40, 700)))
    return call


# --- a real response.done ----------------------------------------------------------------


def test_a_real_usage_is_split_into_uncached_cached_and_output_by_modality() -> None:
    counts = counts_from_usage(REAL_USAGE)
    assert counts == TokenCounts(
        text_in=29,  # 1245 - 1216 cached
        text_cached=1216,
        audio_in=280,  # 856 - 576 cached
        audio_cached=576,
        text_out=87,
        audio_out=345,
    )
    assert counts.total == 2533  # the API's own total_tokens: nothing counted twice


def test_a_real_usage_costs_what_the_price_list_says_on_gpt_realtime() -> None:
    call = CallUsage()
    call.add_response_done(response_done(REAL_USAGE))
    # 29*4 + 1216*0.40 + 87*16 + 280*32 + 576*0.40 + 345*64
    # = 116 + 486.4 + 1392 + 8960 + 230.4 + 22080 = 33264.8 per 1M
    assert call.cost(PriceTable(), "gpt-realtime", None) == pytest.approx(0.0332648)


def test_a_real_usage_costs_what_the_price_list_says_on_gpt_realtime_mini() -> None:
    call = CallUsage()
    call.add_response_done(response_done(REAL_USAGE))
    # 29*0.60 + 1216*0.06 + 87*2.40 + 280*10 + 576*0.30 + 345*20
    # = 17.4 + 72.96 + 208.8 + 2800 + 172.8 + 6900 = 10171.96 per 1M
    assert call.cost(PriceTable(), "gpt-realtime-mini", None) == pytest.approx(0.01017196)


def test_the_default_table_holds_the_spec_prices() -> None:
    assert DEFAULT_PRICES["gpt-realtime"] == ModelPrices(4, 0.40, 16, 32, 0.40, 64)
    assert DEFAULT_PRICES["gpt-realtime-mini"] == ModelPrices(0.60, 0.06, 2.40, 10, 0.30, 20)


def test_totals_add_up_over_the_call_and_only_responses_with_usage_count() -> None:
    call = three_turn_call()
    call.add_response_done(response_done(None))  # cancelled before it started
    call.add_response_done({"id": "resp_x", "status": "cancelled"})  # no usage key at all
    assert call.responses == 3
    assert call.model == TokenCounts(
        text_in=200, text_cached=100, audio_in=600, audio_cached=300, text_out=100, audio_out=2000
    )
    assert call.model.total == 3300


# --- cached tokens -------------------------------------------------------------------------


def test_cached_tokens_are_charged_at_the_cached_rate_and_not_also_at_the_full_rate() -> None:
    call = CallUsage()
    call.add_response_done(response_done(usage(0, 1000, 0, 1000, 0, 0)))
    # all 1000 audio input tokens cached: 1000*0.40 = 400 per 1M, not 1000*32 + 400
    assert call.cost(PriceTable(), "gpt-realtime", None) == pytest.approx(0.0004)
    assert call.model.audio_in == 0
    assert call.model.audio_cached == 1000


def test_cached_tokens_without_details_go_to_text_first_then_audio() -> None:
    # A gateway that drops cached_tokens_details: 500 cached of 100 text + 900 audio.
    counts = counts_from_usage(
        {
            "input_tokens": 1000,
            "input_token_details": {"text_tokens": 100, "audio_tokens": 900, "cached_tokens": 500},
        }
    )
    assert (counts.text_in, counts.text_cached) == (0, 100)
    assert (counts.audio_in, counts.audio_cached) == (500, 400)
    # 100*0.40 + 500*32 + 400*0.40 = 40 + 16000 + 160 = 16200 per 1M. Had the cache been put
    # on audio first (500 audio cached, 100 text + 400 audio full price) it would read
    # 100*4 + 400*32 + 500*0.40 = 13400: the rule never claims the bigger discount.
    assert counts.cost(DEFAULT_PRICES["gpt-realtime"]) == pytest.approx(0.0162)


def test_cached_tokens_never_exceed_the_input_they_are_part_of() -> None:
    counts = counts_from_usage(
        {
            "input_tokens": 300,
            "input_token_details": {
                "text_tokens": 100,
                "audio_tokens": 200,
                "cached_tokens": 9999,
                "cached_tokens_details": {"text_tokens": 5000, "audio_tokens": 5000},
            },
        }
    )
    assert counts == TokenCounts(text_cached=100, audio_cached=200)
    assert counts_from_usage({"input_token_details": {"cached_tokens": 500}}) == TokenCounts()


def test_a_gateways_bare_totals_are_counted_as_audio() -> None:
    counts = counts_from_usage({"input_tokens": 1000, "output_tokens": 500})
    assert counts == TokenCounts(audio_in=1000, audio_out=500)
    # 1000*32 + 500*64 = 64000 per 1M: the dearer modality, so the estimate errs high
    assert counts.cost(DEFAULT_PRICES["gpt-realtime"]) == pytest.approx(0.064)


# --- model lookup --------------------------------------------------------------------------


def test_dated_snapshots_are_priced_as_their_family() -> None:
    table = PriceTable()
    assert table.lookup("gpt-realtime-2025-08-28") is DEFAULT_PRICES["gpt-realtime"]
    assert table.lookup("gpt-realtime-mini-2025-10-06") is DEFAULT_PRICES["gpt-realtime-mini"]
    assert table.lookup("GPT-Realtime-Mini") is DEFAULT_PRICES["gpt-realtime-mini"]


def test_a_mini_model_is_never_priced_as_the_full_one() -> None:
    table = PriceTable()
    for name in ("gpt-realtime-mini", "gpt-realtime-mini-2025-12-15", "gpt-realtime-2.1-mini"):
        prices = table.lookup(name)
        assert prices is not None
        assert prices.audio_in == 10, name  # gpt-realtime's is 32


def test_only_a_dated_snapshot_takes_its_familys_price() -> None:
    a = ModelPrices(1, 1, 1, 1, 1, 1)
    ab = ModelPrices(2, 2, 2, 2, 2, 2)
    table = PriceTable({"a": a, "a-b": ab})
    assert table.lookup("a-b-2026-01-01") is ab
    assert table.lookup("a-2026-01-01") is a
    # Another suffix is another model: unpriced, not guessed at.
    assert table.lookup("a-c") is None
    assert table.lookup("ab") is None
    assert PriceTable().lookup("gpt-realtimex") is None
    assert PriceTable().lookup("gpt-realtime-3") is None


def test_an_unknown_model_has_no_price_and_the_summary_says_how_to_fix_it() -> None:
    table = PriceTable()
    assert table.lookup("acme-voice-1") is None
    assert table.lookup(None) is None
    assert table.lookup("") is None
    call = three_turn_call()
    assert call.cost(table, "acme-voice-1", None) is None
    assert call.summary(table, "acme-voice-1", None).endswith(
        "est. cost unknown (no price for model 'acme-voice-1'; set REALTIME_PRICES)"
    )


# --- the log line --------------------------------------------------------------------------


def test_the_summary_reads_as_one_log_line() -> None:
    call = three_turn_call()
    # 200*4 + 100*0.40 + 600*32 + 300*0.40 + 100*16 + 2000*64
    # = 800 + 40 + 19200 + 120 + 1600 + 128000 = 149760 per 1M = $0.14976
    assert call.summary(PriceTable(), "gpt-realtime", "gpt-4o-mini-transcribe") == (
        "usage: 3 responses, model tokens in 1200 (text 300, audio 900, cached 400) "
        "out 2100 (text 100, audio 2000); est. cost $0.1498 (gpt-realtime)"
    )


def test_a_call_with_no_usage_still_summarises() -> None:
    summary = CallUsage().summary(PriceTable(), "gpt-realtime", None)
    assert summary == (
        "usage: 0 responses, model tokens in 0 (text 0, audio 0, cached 0) "
        "out 0 (text 0, audio 0); est. cost $0.0000 (gpt-realtime)"
    )


# --- caller transcription ------------------------------------------------------------------


def test_transcription_tokens_accumulate_and_are_billed_at_the_transcribers_prices() -> None:
    call = three_turn_call()
    for _ in range(2):
        call.add_transcription(
            {
                "type": "tokens",
                "input_tokens": 210,
                "output_tokens": 15,
                "total_tokens": 225,
                "input_token_details": {"text_tokens": 10, "audio_tokens": 200},
            }
        )
    assert call.transcription == TokenCounts(text_in=20, audio_in=400, text_out=30)
    # model 149760 per 1M (above) + transcription 400*3 + 20*1.25 + 30*5 = 1375 per 1M
    assert call.cost(PriceTable(), "gpt-realtime", "gpt-4o-mini-transcribe") == pytest.approx(
        0.151135
    )
    assert call.summary(PriceTable(), "gpt-realtime", "gpt-4o-mini-transcribe") == (
        "usage: 3 responses, model tokens in 1200 (text 300, audio 900, cached 400) "
        "out 2100 (text 100, audio 2000); transcription 450 tokens; "
        "est. cost $0.1511 (gpt-realtime + gpt-4o-mini-transcribe)"
    )


def test_transcription_by_duration_is_priced_per_minute() -> None:
    call = CallUsage()
    call.add_transcription({"type": "duration", "seconds": 50})
    call.add_transcription({"type": "duration", "seconds": 40.0})
    assert call.transcription_seconds == 90.0
    # 1.5 min * $0.006
    assert call.cost(PriceTable(), "gpt-realtime", "whisper-1") == pytest.approx(0.009)
    summary = call.summary(PriceTable(), "gpt-realtime", "whisper-1")
    assert "transcription 90.0 s of audio;" in summary
    assert summary.endswith("est. cost $0.0090 (gpt-realtime + whisper-1)")


def test_unpriced_transcription_keeps_the_model_cost_and_says_it_is_left_out() -> None:
    call = three_turn_call()
    call.add_transcription({"type": "tokens", "input_tokens": 100, "output_tokens": 20})
    assert call.cost(PriceTable(), "gpt-realtime", "acme-stt") == pytest.approx(0.14976)
    summary = call.summary(PriceTable(), "gpt-realtime", "acme-stt")
    assert "transcription 120 tokens (unpriced: no price for model 'acme-stt')" in summary
    assert summary.endswith("est. cost $0.1498 (gpt-realtime; transcription not included)")


def test_seconds_for_a_model_without_a_per_minute_price_are_unpriced() -> None:
    table = PriceTable().with_overrides({"acme-stt": ModelPrices(1, 1, 1, 1, 1, 0)})
    call = CallUsage()
    call.add_transcription({"type": "duration", "seconds": 30})
    assert call.cost(table, "gpt-realtime", "acme-stt") == 0.0
    assert "no per-minute price for 'acme-stt'" in call.summary(table, "gpt-realtime", "acme-stt")


# --- garbage never raises and adds nothing -------------------------------------------------


class Hostile(Mapping[str, Any]):
    def __repr__(self) -> str:  # a stable test id, the same in every pytest worker
        return "Hostile()"

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


GARBAGE_USAGE: list[object] = [
    None,
    [],
    "usage",
    42,
    {},
    {"input_tokens": "x"},
    {"input_tokens": True, "output_tokens": True},
    {"input_tokens": 1.5, "output_tokens": 2.0},
    {"input_tokens": -5, "output_tokens": -1},
    {"input_token_details": {"text_tokens": -3, "audio_tokens": "9", "cached_tokens": -1}},
    {"input_token_details": "junk", "output_token_details": [1, 2]},
    {"input_token_details": {"cached_tokens": True, "cached_tokens_details": 7}},
    {"output_token_details": {"text_tokens": False, "audio_tokens": None}},
]


@pytest.mark.parametrize("bad", GARBAGE_USAGE, ids=repr)
def test_garbage_response_usage_never_raises_and_adds_nothing(bad: object) -> None:
    assert counts_from_usage(bad) == TokenCounts()
    call = CallUsage()
    call.add_response_done(response_done(bad))
    assert call.responses == 0
    assert call.model == TokenCounts()


@pytest.mark.parametrize("bad", [None, [], "response", 7, Hostile()], ids=repr)
def test_garbage_response_objects_never_raise(bad: object) -> None:
    call = CallUsage()
    call.add_response_done(bad)
    call.add_response_done({"usage": Hostile()})
    assert call.responses == 0


@pytest.mark.parametrize(
    "bad",
    [
        *GARBAGE_USAGE,
        Hostile(),
        {"type": "duration", "seconds": "90"},
        {"type": "duration", "seconds": -3},
        {"type": "duration", "seconds": float("nan")},
        {"type": "duration", "seconds": float("inf")},
        {"type": "duration", "seconds": True},
        {"type": "tokens", "input_tokens": -1, "output_tokens": "2"},
    ],
    ids=repr,
)
def test_garbage_transcription_usage_never_raises_and_adds_nothing(bad: object) -> None:
    call = CallUsage()
    call.add_transcription(bad)
    assert call.transcription == TokenCounts()
    assert call.transcription_seconds == 0.0
    assert "transcription" not in call.summary(PriceTable(), "gpt-realtime", "whisper-1")


# --- operator price overrides --------------------------------------------------------------


def test_a_partial_override_of_a_known_model_keeps_its_other_prices() -> None:
    overrides = parse_price_overrides('{"GPT-Realtime": {"audio_in": 30, "audio_out": 60}}')
    prices = overrides["gpt-realtime"]
    assert (prices.audio_in, prices.audio_out) == (30, 60)
    assert (prices.text_in, prices.text_cached, prices.audio_cached) == (4, 0.40, 0.40)
    table = PriceTable().with_overrides(overrides)
    assert table.lookup("gpt-realtime-2025-08-28") == prices  # snapshots follow the override
    assert table.lookup("gpt-realtime-mini") is DEFAULT_PRICES["gpt-realtime-mini"]
    assert PriceTable().lookup("gpt-realtime") is DEFAULT_PRICES["gpt-realtime"]  # untouched


def test_a_new_model_can_be_priced_in_full() -> None:
    text = json.dumps(
        {
            "acme-voice": {
                "text_in": 1,
                "text_cached": 0.1,
                "text_out": 2,
                "audio_in": 3,
                "audio_cached": 0.3,
                "audio_out": 4,
                "per_minute": None,
            }
        }
    )
    table = PriceTable().with_overrides(parse_price_overrides(text))
    assert table.lookup("acme-voice-2026-01-01") == ModelPrices(1, 0.1, 2, 3, 0.3, 4)
    call = CallUsage()
    call.add_response_done(response_done({"input_tokens": 1_000_000}))
    assert call.cost(table, "acme-voice", None) == pytest.approx(3.0)  # 1M audio in at $3


def test_overrides_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-realtime-mini": {"text_out": 3}}', encoding="utf-8")
    assert parse_price_overrides(str(path))["gpt-realtime-mini"].text_out == 3
    assert parse_price_overrides(f"  {path}\n")["gpt-realtime-mini"].audio_in == 10


def test_no_override_text_means_no_overrides() -> None:
    assert parse_price_overrides("") == {}
    assert parse_price_overrides("   ") == {}
    assert parse_price_overrides("{}") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"gpt-realtime": {"audio_in": 30', ["not valid JSON", "nor the path of an existing"]),
        ("/no/such/prices.json", ["not valid JSON", "existing file"]),
        ('[{"gpt-realtime": {}}]', ["must be a JSON object", "a list"]),
        ('{"gpt-realtime": 4}', ["'gpt-realtime'", "must be a JSON object", "a number"]),
        ('{"gpt-realtime": {"audio_inn": 30}}', ["'gpt-realtime'", "unknown field 'audio_inn'"]),
        ('{"gpt-realtime": {"text_out": -1}}', ["'gpt-realtime'", "'text_out'", "-1"]),
        ('{"gpt-realtime": {"text_out": "16"}}', ["'gpt-realtime'", "'text_out'", '"16"']),
        ('{"gpt-realtime": {"text_out": true}}', ["'gpt-realtime'", "'text_out'", "true"]),
        ('{"gpt-realtime": {"text_out": NaN}}', ["'gpt-realtime'", "'text_out'", "NaN"]),
        (
            '{"acme-voice": {"text_in": 1, "audio_in": 2}}',
            ["'acme-voice'", "all six", "text_cached", "text_out", "audio_cached", "audio_out"],
        ),
        ('{"": {"text_in": 1}}', ["empty model name"]),
        ('{"gpt-realtime": {}, "GPT-REALTIME": {}}', ["'GPT-REALTIME'", "twice"]),
    ],
)
def test_bad_overrides_are_refused_with_one_line_naming_the_model_and_field(
    text: str, expected: list[str]
) -> None:
    with pytest.raises(ValueError) as caught:
        parse_price_overrides(text)
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_a_bad_override_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-realtime": {"text_in": -4}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"prices\.json.*'gpt-realtime'.*'text_in'"):
        parse_price_overrides(str(path))
    path.write_text("{oops", encoding="utf-8")
    with pytest.raises(ValueError, match=r"prices\.json: not valid JSON"):
        parse_price_overrides(str(path))


def test_the_local_echo_agent_costs_nothing_and_says_so() -> None:
    call = three_turn_call()
    call.add_transcription({"type": "tokens", "input_tokens": 40, "output_tokens": 10})
    assert call.cost(PriceTable(), LOCAL_AGENT_MODEL, "gpt-4o-mini-transcribe") == 0.0
    summary = call.summary(PriceTable(), LOCAL_AGENT_MODEL, "gpt-4o-mini-transcribe")
    assert summary.endswith("no cost (the built-in local echo agent)")
    assert "$" not in summary
