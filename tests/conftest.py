"""Fixtures every kind of test may ask for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.settings_env import setting_names


@pytest.fixture
def no_settings_in_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """None of the machine's settings (its variables, a .env file in the working
    directory) leaks into the test: it runs in an empty directory, with every variable the
    bridge reads unset."""
    monkeypatch.chdir(tmp_path)
    names = setting_names()
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name)
