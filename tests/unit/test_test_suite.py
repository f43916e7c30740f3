"""The suite's own configuration, as a contributor meets it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_skipped_test_says_why_in_the_normal_output(tmp_path: Path) -> None:
    (tmp_path / "test_needs_a_browser.py").write_text(
        "import pytest\n\n"
        "def test_browser():\n"
        "    pytest.skip('needs chromium: apt-get install chromium chromium-driver')\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-n", "0",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SKIPPED" in run.stdout and "needs chromium: apt-get install" in run.stdout, run.stdout
