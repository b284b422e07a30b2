"""Keeps the README's configuration table equal to the one generated from the settings."""

from __future__ import annotations

from pathlib import Path

from schemas.settings import settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def render(readme_text: str) -> str:
    head, rest = readme_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_markdown()}{END}{tail}"


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
    print(f"updated {README}")
