"""The bridge's settings in a test's environment: which variables they are, an environment
without them, and what loading them with some set reports."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bridge.records.store import call_db_problems
from bridge.settings import ConfigError, Settings, load_settings


def setting_names() -> set[str]:
    """Every environment variable the bridge reads, as Settings names them."""
    prefix = (Settings.model_config.get("env_prefix") or "").upper()
    return {prefix + (f.alias or name).upper() for name, f in Settings.model_fields.items()}


def without_settings(environ: Mapping[str, str], **extra: str) -> dict[str, str]:
    """`environ` without any of the bridge's settings (read case-insensitively, as the
    bridge reads them), plus `extra`: for a command run as a fresh operator would."""
    names = setting_names()
    return {**{k: v for k, v in environ.items() if k.upper() not in names}, **extra}


def problems(monkeypatch: pytest.MonkeyPatch, serving: bool = True, **env: str) -> list[str]:
    """The problems load_settings reports with these variables set (for `serve` unless
    `serving` is False)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    checks = [lambda settings: call_db_problems(settings.call_db_path)] if serving else []
    with pytest.raises(ConfigError) as caught:
        load_settings(checks=checks)
    return caught.value.problems
