"""Barge-in and the playback ledger: when the caller talks over the assistant, Twilio's queue
is cleared and each item the caller did not hear in full is truncated where they stopped
hearing it, never further than what played; nothing more of that answer plays."""

from __future__ import annotations

from bridge.core.actions import (
    Action,
    CancelResponse,
    ClearAudio,
    PlayAudio,
    SendMark,
    TruncateItem,
)
from bridge.core.events import AudioDelta
from tests.helpers.core_harness import (
    audio,
    configured_call,
    kinds,
    of,
    truncations,
)


def test_barge_in_mid_item_clears_and_truncates_at_what_was_heard() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)  # 100 ms
    h.delta("r1", "a", 800, 0.0)  # 100 ms more, queued behind it
    h.echo("a:800", 0.100)  # the first 100 ms have played
    actions = h.speech_started(0.160)  # 60 ms into the second chunk
    # No CancelResponse: the session interrupts by itself. The mark tells whoever plays
    # Twilio's side where the bridge cut.
    assert actions == [ClearAudio(), TruncateItem("a", 0, 160), SendMark("truncated:a:160")]


def test_truncation_after_a_model_stall_counts_only_audio_that_played() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.100)  # played; Twilio's queue is now empty
    h.delta("r1", "a", 800, 0.700)  # the model stalled for 600 ms
    actions = h.speech_started(0.750)
    # 100 ms + 50 ms of the late chunk. Start-of-item wall clock would claim 750 ms, more
    # than the 200 ms that exist, and the server would reject the truncate.
    assert truncations(actions) == [("a", 150)]


def test_barge_in_while_the_model_stalls_truncates_at_everything_sent() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.100)
    actions = h.speech_started(0.400)  # silence on the line, the answer not finished
    # Nothing queued, nothing to clear: only the truncate, at all 100 ms sent.
    assert actions == [TruncateItem("a", 0, 100)]
    assert h.delta("r1", "a", 800, 0.410) == []


def test_no_clear_or_truncate_once_playback_has_finished() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.audio_done("r1", "a", 0.01)
    h.response_done("r1", 0.02)
    h.echo("a:800", 0.100)
    assert h.speech_started(0.5) == []
    assert h.summary().barge_ins == ()


def test_playback_finished_even_when_the_last_echo_comes_after_audio_done() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.100)
    h.audio_done("r1", "a", 0.2)
    h.response_done("r1", 0.2)
    assert h.speech_started(0.5) == []


def test_a_response_of_two_items_truncates_the_playing_one_and_zeroes_the_next() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.audio_done("r1", "a", 0.0)
    h.delta("r1", "b", 800, 0.0)
    h.delta("r1", "b", 800, 0.0)
    h.audio_done("r1", "b", 0.0)
    h.response_done("r1", 0.0)
    h.echo("a:800", 0.100)  # item a heard in full: nothing to truncate there
    assert truncations(h.speech_started(0.130)) == [("b", 30)]

    h2 = configured_call()
    h2.response_created("r1", 0.0)
    h2.delta("r1", "a", 800, 0.0)
    h2.delta("r1", "b", 800, 0.0)
    actions = h2.speech_started(0.050)  # still in item a; b queued, never heard
    assert truncations(actions) == [("a", 50), ("b", 0)]


def test_mark_echoes_caused_by_a_clear_do_not_count_as_playback() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    for _ in range(3):
        h.delta("r1", "a", 800, 0.0)
    h.echo("a:800", 0.1)
    h.speech_started(0.12)
    # Twilio now echoes the flushed marks at once; none of them was heard.
    for mark in ["a:1600", "a:2400", "truncated:a:120"]:
        assert h.echo(mark, 0.125) == []
    h.response_done("r1", 0.13, status="cancelled")
    h.response_created("r2", 1.0)
    h.delta("r2", "b", 800, 1.0)
    h.delta("r2", "b", 800, 1.0)
    assert truncations(h.speech_started(1.040)) == [("b", 40)]


def test_deltas_of_the_interrupted_response_are_dropped_and_the_next_response_plays() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    h.speech_started(0.05)
    assert h.delta("r1", "a", 800, 0.06) == []
    assert h.delta("r1", "a2", 800, 0.07) == []  # even a new item of the same response
    h.response_done("r1", 0.08, status="cancelled")
    h.response_created("r2", 1.0)
    assert h.delta("r2", "b", 800, 1.0) == [PlayAudio(audio(800), "b:800")]


def test_the_answer_is_cancelled_only_by_a_session_that_does_not_itself_and_only_once() -> None:
    h = configured_call(interrupts_by_itself=False)
    h.response_created("r1", 0.0)
    h.delta("r1", "a", 800, 0.0)
    first = h.speech_started(0.05)
    # Cancelled before it is truncated, so the item is not still growing when cut.
    assert kinds(first) == ["ClearAudio", "CancelResponse", "TruncateItem", "SendMark"]
    assert of(TruncateItem, first) == [TruncateItem("a", 0, 50)]
    assert of(CancelResponse, h.speech_started(0.06)) == []

    idle = configured_call(interrupts_by_itself=False)
    assert idle.speech_started(0.0) == []  # no response in progress: nothing to cancel


def test_speech_while_a_response_is_starting_but_silent_sends_nothing_but_drops_it() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    assert h.speech_started(0.01) == []  # an auto-interrupting session cancels it itself
    assert h.delta("r1", "a", 800, 0.02) == []


def test_truncation_stays_exact_across_many_turns_with_stalls_and_varied_chunks() -> None:
    """Twenty turns against an exact model of Twilio's playback (zero network delay)."""
    h = configured_call()
    now = 0.0
    for turn in range(20):
        rid, iid = f"r{turn}", f"i{turn}"
        h.response_created(rid, now)
        sizes = [160 * (1 + (turn + k) % 7) for k in range(6)]
        playhead = now  # when Twilio's queue runs dry
        queue: list[tuple[float, str]] = []  # (time the mark echoes, mark)
        sent = 0
        for k, size in enumerate(sizes):
            send_at = now + (0.4 if k == 3 and turn % 3 == 0 else 0.0)  # a stall now and then
            now = send_at
            h.delta(rid, iid, size, send_at)
            sent += size
            playhead = max(playhead, send_at) + size / 8000
            queue.append((playhead, h.played_marks[-1]))
        barge_at = now + 0.0317 * (1 + turn % 5)
        heard = 0
        for echo_at, mark in queue:
            if echo_at <= barge_at:
                h.echo(mark, echo_at)
                heard = int(mark.split(":")[1])
        # the chunk playing at barge_at started when the previous one ended (or was sent)
        playing = next(((t, m) for t, m in queue if t > barge_at), None)
        if playing is not None:
            end_at, mark = playing
            size = int(mark.split(":")[1]) - heard
            heard += round((barge_at - (end_at - size / 8000)) * 8000)
        actions = h.speech_started(barge_at)
        if playing is None:
            # All sent audio played but the answer is not finished: cut at what was sent.
            assert truncations(actions) == [(iid, sent // 8)]
        else:
            [(item, ms)] = truncations(actions)
            assert item == iid
            assert abs(ms - heard / 8) <= 1, (turn, ms, heard / 8)
            assert ms <= sent / 8
        h.response_done(rid, barge_at, status="cancelled")
        now = barge_at + 1.0


def test_deltas_without_a_response_id_still_play_after_an_earlier_barge_in() -> None:
    h = configured_call()

    def delta_without_response_id(item: str, now: float) -> list[Action]:
        return h.handle(AudioDelta(None, item, 0, audio(800)), now)

    h.response_created("r1", 0.0)
    delta_without_response_id("a", 0.0)
    assert truncations(h.speech_started(0.05)) == [("a", 50)]
    assert delta_without_response_id("a", 0.06) == []  # r1 was interrupted
    h.response_done("r1", 0.07, status="cancelled")
    h.response_created("r2", 1.0)
    assert delta_without_response_id("b", 1.0) == [PlayAudio(audio(800), "b:800")]


def test_item_ids_with_odd_characters_still_match_their_echoes() -> None:
    h = configured_call()
    item = 'odd"item\\id'
    h.response_created("r1", 0.0)
    out = h.delta("r1", item, 800, 0.0) + h.delta("r1", item, 800, 0.0)
    names = [play.mark for play in of(PlayAudio, out)]
    assert names == [f"{item}:800", f"{item}:1600"]
    h.echo(names[0], 0.1)
    assert truncations(h.speech_started(0.125)) == [(item, 125)]


def test_truncate_names_the_content_part_the_audio_came_from() -> None:
    h = configured_call()
    h.response_created("r1", 0.0)
    h.handle(AudioDelta("r1", "a", 1, audio(800)), 0.0)
    assert of(TruncateItem, h.speech_started(0.05)) == [TruncateItem("a", 1, 50)]
