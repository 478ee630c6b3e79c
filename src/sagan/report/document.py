"""One document model, rendered twice: Markdown (report.md) and self-contained HTML (report.html).

Building the content once and rendering it twice keeps the two files in step. The HTML escapes
all text and embeds every image as a base64 data URI, so the file can be mailed or attached.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    file: Path  # the PNG to embed in the HTML
    href: str  # its path relative to report.md
    caption: str


Block = Union[str, Table, Figure]  # a str is a paragraph


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block]


@dataclass(frozen=True)
class Document:
    title: str
    sections: list[Section]
    # Why the numbers cannot be compared with the paper's; empty when they can.
    warnings: list[str] = field(default_factory=list)


BANNER_HEADLINE = "These numbers cannot be compared with the paper's."


# -- Markdown -----------------------------------------------------------------------------------
def _md(text: str) -> str:
    """Text as Markdown shows it literally: raw HTML (a run name, a title) is escaped, not rendered."""
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block) -> str:
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(c) for c in block.header) + " |",
                 "|" + "---|" * len(block.header)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        return f"![{_md_cell(block.caption)}]({block.href})\n\n*{_md(block.caption)}*"
    return _md(block)


def to_markdown(doc: Document) -> str:
    parts = [f"# {_md(doc.title)}"]
    if doc.warnings:
        parts.append("\n".join([f"> **{BANNER_HEADLINE}**", ">"] + [f"> - {_md(w)}" for w in doc.warnings]))
    for section in doc.sections:
        parts.append(f"## {_md(section.title)}")
        parts += [_md_block(b) for b in section.blocks]
    return "\n\n".join(parts) + "\n"


# -- HTML ---------------------------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
.banner { background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em 1.2em; margin: 1em 0; }
.banner strong { color: #8a5a00; }
figure { margin: 1em 0; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
figcaption { font-style: italic; }
"""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{_h(c)}</th>" for c in block.header)
        body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>\n" for row in block.rows)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.file.read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{_h(block.caption)}">'
                f"<figcaption>{_h(block.caption)}</figcaption></figure>")
    return f"<p>{_h(block)}</p>"


def to_html(doc: Document) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{_h(doc.title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{_h(doc.title)}</h1>"]
    if doc.warnings:
        items = "".join(f"<li>{_h(w)}</li>" for w in doc.warnings)
        parts.append(f'<div class="banner" id="not-comparable" role="alert">'
                     f"<strong>{_h(BANNER_HEADLINE)}</strong><ul>{items}</ul></div>")
    for section in doc.sections:
        parts.append(f"<h2>{_h(section.title)}</h2>")
        parts += [_html_block(b) for b in section.blocks]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
