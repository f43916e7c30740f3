"""Loading the settings from variables set for one test."""

from __future__ import annotations

import pytest

from bridge.records.store import call_db_problems
from bridge.settings import ConfigError, load_settings


def problems(monkeypatch: pytest.MonkeyPatch, serving: bool = True, **env: str) -> list[str]:
    """The problems load_settings reports with these variables set (for `serve` unless
    `serving` is False)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    checks = [lambda settings: call_db_problems(settings.call_db_path)] if serving else []
    with pytest.raises(ConfigError) as caught:
        load_settings(checks=checks)
    return caught.value.problems
