"""The README's table of supported APIs is the one the code derives (kbroker apis)."""

from pathlib import Path

from kbroker.cli import README_APIS_END, README_APIS_START, apis_table


def test_readme_api_table_matches_the_handler_registry():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text[text.index(README_APIS_START) + len(README_APIS_START):text.index(README_APIS_END)]
    assert block == apis_table(), "run: kbroker apis --update-readme README.md"
