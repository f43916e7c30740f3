"""Where a record's recording is looked for: only a plain file name in RECORDINGS_DIR, or an
object of a recording's format under RECORDINGS_URL's own bucket and prefix, whatever the
record holds; and the byte ranges the console answers for an object."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.console.object_stream import RangeNotSatisfiable, byte_range
from bridge.object_storage import Bucket, BucketPlace
from bridge.recording_storage import LocalRecording, ObjectRecording, RecordingStorage
from bridge.records.model import Recording


def storage(tmp_path: Path) -> RecordingStorage:
    # (a client is made without reaching anything: nothing here sends a request)
    bucket = Bucket(BucketPlace("calls", "bridge/"), endpoint="http://127.0.0.1:9", region="x")
    return RecordingStorage(tmp_path, bucket)


def test_a_record_names_a_file_or_an_object_and_only_those_are_followed(tmp_path: Path) -> None:
    recordings = storage(tmp_path)

    def found(url: str) -> LocalRecording | ObjectRecording | None:
        return recordings.find(Recording("bridge", "completed", url=url))

    assert found("CA1.wav") == LocalRecording(tmp_path / "CA1.wav")  # (records from before)
    assert isinstance(object_ := found("s3://calls/bridge/CA1.flac"), ObjectRecording)
    assert (object_.name, object_.media_type) == ("CA1.flac", "audio/flac")
    for url in (
        "s3://other/bridge/CA1.wav",  # another bucket
        "s3://calls/elsewhere/CA1.wav",  # another prefix
        "s3://calls/bridge/sub/CA1.wav",  # below it
        "s3://calls/bridge/../CA1.wav",
        "s3://calls/bridge/CA1.timeline.json",  # not a recording
        "s3://calls/bridge/.wav",
        "../CA1.wav",
        "/etc/CA1.wav",
    ):
        assert found(url) is None, url
    assert (
        RecordingStorage(tmp_path).find(
            Recording("bridge", "completed", url="s3://calls/bridge/CA1.wav")
        )
        is None
    )
    assert (
        recordings.find(Recording("twilio", "completed", url="https://api.twilio.com/x.wav"))
        is None
    )


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=900-5000", (900, 999)),  # past the end: up to it
        ("bytes=-5000", (0, 999)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole object
        ("bytes=9-1", None),  # malformed: ignored
        ("items=0-9", None),
    ],
)
def test_the_range_asked_for_is_the_range_answered(
    header: str | None, span: tuple[int, int] | None
) -> None:
    assert byte_range(header, 1000) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 1000)
