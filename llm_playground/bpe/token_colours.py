"""Token boundaries that stay visible: neighbour-distinct colours, and a separator for plain text.

`neighbour_colours(keys, n)` picks a palette index per token: the key's own colour (key mod n),
unless the token to its left already has that colour, then the next one (greedy, left to right).
So a token keeps its colour wherever it can, and two neighbours never share one, which a colour
that depends only on the id cannot promise (issue 22: 17 tokens drawn as 7 runs).

`PALETTE` holds background colours that stay pairwise different when a terminal has fewer
colours: they are exact xterm-256 cube colours, and rich's downgrade maps them to six different
ANSI colours on 16- and 8-colour terminals (the old muted palette fell to one grey on 256-colour
terminals, the usual tmux setting). Text on them is drawn white.

Where colour cannot show (a pipe, a file, NO_COLOR) a separator marks the boundaries:
`show_piece` escapes a token's text so the marks stay unambiguous (`\\` for a backslash, `\\n`,
`\\t`, `\\r` for line breaks and tabs, `\\` + the separator for the separator itself), and
`boundary_text` builds the rich Text for either way. This module does not tokenize and imports
rich only inside `boundary_text`.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

# xterm-256 indices 88, 22, 94, 18, 90, 30; ANSI red, green, yellow, blue, magenta, cyan.
PALETTE = ("#870000", "#005f00", "#875f00", "#000087", "#870087", "#008787")
TEXT_COLOUR = "#ffffff"
DEFAULT_SEPARATOR = "|"
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def neighbour_colours(keys: Iterable[int], n: int = len(PALETTE), step: int = 1) -> list[int]:
    """A colour index in [0, n) per key: key % n unless the left neighbour took it, then the
    index `step` further on (1: the next; the UI passes n // 2, the opposite hue); neighbours
    always differ. Needs n >= 2 and step not a multiple of n. The one rule for the CLI and the
    UI (playground/token_colours.py)."""
    if n < 2:
        raise ValueError(f"neighbour_colours needs at least 2 colours, got {n}")
    if step % n == 0:
        raise ValueError(f"neighbour_colours: step {step} would keep the neighbour's colour")
    out: list[int] = []
    for key in keys:
        colour = key % n
        if out and out[-1] == colour:
            colour = (colour + step) % n
        out.append(colour)
    return out


def piece_key(piece: str) -> int:
    """A stable key for a token's text (CRC-32 of its UTF-8), so equal texts prefer one colour."""
    return zlib.crc32(piece.encode("utf-8", "surrogatepass"))


def show_piece(piece: str, separator: str | None = None) -> str:
    """A token's text as drawn: backslash, line breaks and tabs escaped, and the separator too."""
    text = "".join(_ESCAPES.get(ch, ch) for ch in piece)
    if separator:
        text = text.replace(separator, "\\" + separator)
    return text


def boundary_text(pieces: Sequence[str], separator: str | None = None, prefix: str = ""):
    """A rich Text of `pieces`: each on a neighbour-distinct background; with a separator, the
    separator between pieces as well (the only marks left once colours are stripped)."""
    from rich.text import Text
    text = Text()
    if prefix:
        text.append(prefix, style="bold")
    colours = neighbour_colours(piece_key(p) for p in pieces)
    for k, (piece, colour) in enumerate(zip(pieces, colours)):
        if separator and k:
            text.append(separator, style="dim")
        text.append(show_piece(piece, separator), style=f"{TEXT_COLOUR} on {PALETTE[colour]}")
    return text


__all__ = ["PALETTE", "DEFAULT_SEPARATOR", "neighbour_colours", "piece_key", "show_piece",
           "boundary_text"]
