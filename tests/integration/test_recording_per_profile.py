"""RECORDING per profile: a profile that records has its calls written to a file by the
bridge, while calls of the profiles that do not are not recorded at all (no file, and a
record that says nothing of a recording)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.running_bridge import running_bridge, stored_record
from tests.helpers.twilio_side import simulated_call

pytestmark = pytest.mark.integration

SALES = "+15551230000"


async def test_only_the_calls_of_a_recording_profile_are_recorded(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f"[profiles.sales]\nnumbers = ['{SALES}']\nrecording = 'bridge'\n")
    recordings = tmp_path / "recordings"
    async with running_bridge(
        profiles_file=str(profiles), recordings_dir=str(recordings)
    ) as bridge:
        assert bridge.settings.recording == "off"
        sales, _ = await simulated_call(bridge, turns=1, to_number=SALES)
        other, _ = await simulated_call(bridge, turns=1)
        sales_record = await stored_record(bridge, sales.call_sid)
        other_record = await stored_record(bridge, other.call_sid)

    assert sales_record.profile == "sales" and other_record.profile == "default"
    assert sales_record.recording is not None
    assert sales_record.recording.status == "completed"
    assert (recordings / sales_record.recording.url).stat().st_size > 44 + 8000  # > 0.25 s
    assert other_record.recording is None
    assert sorted(p.name for p in recordings.iterdir()) == [sales_record.recording.url]
