"""Token ids -> display spans: whole characters only, whitespace made visible, neighbours in
different colours.

A byte-level BPE token can end in the middle of a UTF-8 character (an emoji or a CJK character is
often two or three tokens). `group_spans` joins such tokens into one span, so nothing on screen
shows half a character; `render_spans` turns spans into a Rich `Text` with one background colour
per span, chosen by token_colours.py from the span's first token id: a span's colour always
differs from the span before it, and is the id's own colour wherever that allows.

It does not tokenize: callers pass ids and a `id -> bytes` function (bpe.Tokenizer.id_to_bytes or
a SentencePiece adapter).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from rich.style import Style
from rich.text import Text

from llm_playground.playground.token_colours import run_backgrounds

VISIBLE_WS = {" ": "·", "\t": "→", "\n": "↵\n", "\r": "␍"}


@dataclass(frozen=True)
class Span:
    """Whole characters of text and the token ids that produced them."""
    text: str                 # the decoded characters (complete UTF-8 only, U+FFFD for invalid bytes)
    ids: tuple[int, ...]      # the token ids that produced them (several when a character is split)
    nbytes: int


def group_spans(ids: Iterable[int], id_to_bytes: Callable[[int], bytes]) -> list[Span]:
    """Group consecutive tokens until their bytes end on a UTF-8 character boundary."""
    spans: list[Span] = []
    buf = b""
    group: list[int] = []
    for tid in ids:
        buf += id_to_bytes(tid)
        group.append(tid)
        try:
            text = buf.decode("utf-8")
        except UnicodeDecodeError as err:
            # an incomplete character at the very end: wait for the next token to finish it
            if err.reason == "unexpected end of data" and len(group) < 8:
                continue
            text = buf.decode("utf-8", errors="replace")
        spans.append(Span(text, tuple(group), len(buf)))
        buf, group = b"", []
    if group:
        spans.append(Span(buf.decode("utf-8", errors="replace"), tuple(group), len(buf)))
    return spans


def visible(text: str) -> str:
    """`text` with spaces, tabs, newlines and carriage returns drawn as visible marks."""
    return "".join(VISIBLE_WS.get(ch, ch) for ch in text)


def render_spans(spans: list[Span], selected: int | None = None,
                 click_action: str | None = None, show_whitespace: bool = True) -> Text:
    """Rich Text with one coloured run per span; `click_action` (e.g. "pick") makes span i
    clickable as the action `pick(i)` of the widget that shows the text."""
    out = Text(no_wrap=False)
    backgrounds = run_backgrounds(span.ids[0] if span.ids else -1 for span in spans)
    for i, span in enumerate(spans):
        style = Style(color="#000000", bgcolor=backgrounds[i])
        if i == selected:
            style = Style(color="white", bgcolor="#c0392b", bold=True)
        if click_action:
            style += Style.from_meta({"@click": f"{click_action}({i})"})
        out.append(visible(span.text) if show_whitespace else span.text, style)
    return out
