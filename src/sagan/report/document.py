"""One document model, rendered twice: Markdown (report.md) and self-contained HTML (report.html).

Building the content once and rendering it twice keeps the two files in step. Both escape all
text, so that a name a user picks (a title, a run, a study, a param value) is shown and never
rendered: no markup, link or image comes from text. The HTML embeds every image as a base64 data
URI, so the file can be mailed or attached.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from urllib.parse import quote


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    file: Path  # the PNG to embed in the HTML
    href: str  # its path relative to report.md
    caption: str


@dataclass(frozen=True)
class Labelled:
    """A paragraph led by a bold label ("Reading: ..."): markup comes from the model, never from text."""
    label: str
    text: str


Block = Union[str, Table, Figure, Labelled]  # a str is a paragraph


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
# Markdown that text can open anywhere in a line: code spans, emphasis, links and images, GFM's
# strikethrough and table cells, a heading's closing "#", and the escape itself. With "[" escaped no
# link or image can form, so "(", ")" and "!" stay as they are; "_" between two letters or digits
# opens no emphasis, so `train.lr_d` stays readable.
_MD_INLINE = re.compile(r"[\\`*\[\]~#|]|(?<![^\W_])_|_(?![^\W_])")
# What makes the text of a paragraph or list item a list or a rule: a leading "-", "+" or "1." / "1)"
# ("*" and "_" are escaped as inline syntax).
_MD_BLOCK_START = re.compile(r"^(\s*\d{0,9})([-+.)])")


def _md(text: str) -> str:
    """Text as Markdown shows it literally, on one line (a line break could start a heading or a link
    definition): CommonMark backslash escapes for its syntax, entities for HTML's, as in the HTML."""
    return _MD_INLINE.sub(r"\\\g<0>", html.escape(" ".join(text.splitlines()), quote=False))


def _md_block_text(text: str) -> str:
    """Text that starts a block (a paragraph, a list item), escaped as `_md` does and for its start."""
    return _MD_BLOCK_START.sub(r"\1\\\2", _md(text))


def _md_block(block: Block) -> str:
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md(c) for c in block.header) + " |",
                 "|" + "---|" * len(block.header)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        # The path may hold a study's name: percent-encoded, it cannot end the link early.
        return f"![{_md(block.caption)}]({quote(block.href)})\n\n*{_md(block.caption)}*"
    if isinstance(block, Labelled):
        return f"**{_md(block.label)}** {_md(block.text)}"
    return _md_block_text(block)


def to_markdown(doc: Document) -> str:
    parts = [f"# {_md(doc.title)}"]
    if doc.warnings:
        parts.append("\n".join([f"> **{BANNER_HEADLINE}**", ">"]
                                + [f"> - {_md_block_text(w)}" for w in doc.warnings]))
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
    if isinstance(block, Labelled):
        return f"<p><strong>{_h(block.label)}</strong> {_h(block.text)}</p>"
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
