"""Loading the settings from variables set for one test."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, load_settings


def problems(monkeypatch: pytest.MonkeyPatch, serving: bool = True, **env: str) -> list[str]:
    """The problems load_settings reports with these variables set (for `serve` unless
    `serving` is False)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(serving=serving)
    return caught.value.problems
