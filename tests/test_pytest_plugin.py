"""The pytest plugin as a user sees it: a small project (tests/plugin_project) that uses the
`kbroker` fixtures and the embedding helpers runs under pytest in a child process."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).parent / "plugin_project"


def plugin_registered() -> bool:
    return any(entry.value == "kbroker.pytest_plugin"
               for entry in importlib.metadata.entry_points(group="pytest11"))


def test_plugin_project_passes():
    # An install of an older kbroker (without the entry point) gets the plugin by name instead.
    load = [] if plugin_registered() else ["-p", "kbroker.pytest_plugin"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *load, str(PROJECT)],
        cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout, result.stdout


def test_plugin_is_declared_as_a_pytest11_entry_point():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\nkbroker = "kbroker.pytest_plugin"' in text
