"""Markdown output: GitHub anchors, DataFrames as GitHub-flavoured tables, the Jinja template,
the atomic write."""

from __future__ import annotations

import re
from pathlib import Path

from spgnet.atomic import atomic_path
from spgnet.config import PROJECT_ROOT

TEMPLATES_DIR = PROJECT_ROOT / "reports" / "templates"
TEMPLATE = "tables.md.j2"


def _section(table: str, title: str, notes: list[str], frame, align: list[str], short: str | None = None) -> dict:
    """One section of the template: heading, its name in the contents line, notes, Markdown table."""
    short = short or (title.split(".")[0] if re.match(r"Table \S+\.", title) else title)
    return {"table": table, "title": title, "short": short, "anchor": github_anchor(title), "notes": notes,
            "markdown": to_markdown(frame, align), "frame": frame}


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return slug.replace(" ", "-")


def _escape(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame, align: list[str] | None = None) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (``align``: "l", "r" or "c" per column)."""
    columns = [str(c) for c in frame.columns]
    align = align or ["l"] * len(columns)
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_escape(c) for c in columns) + " |",
             "|" + "|".join(rule[a] for a in align) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_escape(v) for v in row) + " |")
    return "\n".join(lines)


def render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(TEMPLATE).render(**context)


def write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
