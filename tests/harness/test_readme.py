"""The README's model and weights tables are generated from the registry (`c6bench models --markdown`)."""

from __future__ import annotations

from pathlib import Path

from harness.commands.models import markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_model_tables_are_the_registry() -> None:
    block = markdown()
    assert block in README.read_text(), "README.md's models block is stale: paste `c6bench models --markdown` there"
    assert all(f"| `{name}` |" in block for name in __import__("adapters").names())
