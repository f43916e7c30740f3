"""`.env.example` and the README's settings table stay in step with `Settings`: every
setting listed, with its default and a line saying what it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {name.upper() for name in Settings.model_fields}
ASSIGNMENT = re.compile(r"# ([A-Z][A-Z0-9_]*)=(.*)")


def example_lines() -> list[str]:
    return (REPO / ".env.example").read_text().splitlines()


def test_the_example_lists_every_setting_once_each_with_a_comment_above() -> None:
    lines = example_lines()
    listed = []
    for i, line in enumerate(lines):
        match = ASSIGNMENT.fullmatch(line)
        if match is None:
            continue
        listed.append(match[1])
        above = lines[i - 1]
        assert above.startswith("# ") and not ASSIGNMENT.fullmatch(above), match[1]
        assert len(above) > 12, f"{match[1]}: say what it is"
    assert sorted(listed) == sorted(SETTINGS)  # each once, none missing, none unknown


@pytest.mark.usefixtures("no_settings_in_env")
def test_the_example_shows_the_defaults(tmp_path: Path) -> None:
    """Uncommented as it stands, the example changes nothing: each value is the default."""
    uncommented = [m[0][2:] for line in example_lines() if (m := ASSIGNMENT.fullmatch(line))]
    env_file = tmp_path / "example.env"
    env_file.write_text("\n".join(uncommented) + "\n")
    assert load_settings(_env_file=env_file) == load_settings(_env_file=None)


def readme_settings_table() -> list[str]:
    """The setting names in the first column of the README's settings table."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Talk to OpenAI") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])]


def test_the_readme_table_names_every_setting_once() -> None:
    names = readme_settings_table()
    assert sorted(names) == sorted(SETTINGS)


def test_the_readme_writes_nothing_like_a_setting_that_is_not_one() -> None:
    """A constant written as `NAME_S` reads like a variable an operator could set."""
    text = (REPO / "README.md").read_text()
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", text))
    assert named <= SETTINGS, named - SETTINGS
