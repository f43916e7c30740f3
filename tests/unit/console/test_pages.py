"""The console's page helpers that are not a whole page."""

from __future__ import annotations

import pytest

from bridge.console.pages import fmt_clock


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "00:00.0"),
        (0.25, "00:00.3"),  # half up, as the page's script rounds
        (59.96, "01:00.0"),
        (754.3, "12:34.3"),
        (3723.4, "1:02:03.4"),
        (-0.2, "00:00.0"),  # nothing on a recording comes before its start
    ],
)
def test_a_moment_reads_as_a_player_shows_it(seconds: float, shown: str) -> None:
    assert fmt_clock(seconds) == shown
