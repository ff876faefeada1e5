"""Background colours for token runs that always show where one token ends and the next begins.

One rule for every place the UI colours tokens (the Chat tab's token colours, the Tokenizers
tab): each token gets its *home* colour, a function of its id alone, so the same id tends to look
the same everywhere; when the home colour is the colour of the token just before it, it gets the
colour opposite on the palette instead. Going left to right, every token's colour then differs
from its left neighbour's, so no two neighbours ever share a colour and every boundary is
visible (a hue walk over ids gave `!`, ` Token`, `izers` nearly one colour).

The palette is eight light hues that stay readable with black text in the dark and the light
theme; opposite entries are far apart in hue. This module only chooses colours; token_spans.py
draws the runs. The neighbour rule itself is the CLI's (bpe/token_colours.py), with this
palette and the opposite hue as the alternative.
"""
from __future__ import annotations

from typing import Iterable

from llm_playground.bpe.token_colours import neighbour_colours

# Light backgrounds for black text, in hue order: red, orange, yellow, green, cyan, blue,
# violet, pink. Entry i and entry i + 4 are roughly opposite hues.
PALETTE = ("#f4a3a3", "#f6c48a", "#ece07e", "#a6dd9b", "#94d9e3", "#a9b7f3", "#cfa6f0", "#f1a6d2")
OPPOSITE = len(PALETTE) // 2
_GOLDEN = 0.6180339887


def home_colour(token_id: int, palette_size: int = len(PALETTE)) -> int:
    """The palette index a token id gets when its left neighbour does not already have it:
    a golden-ratio walk, so consecutive ids land far apart on the palette."""
    return int(((token_id * _GOLDEN) % 1.0) * palette_size) % palette_size


def neighbour_distinct_colours(ids: Iterable[int], palette_size: int = len(PALETTE)) -> list[int]:
    """Palette indices, one per id, such that neighbours always differ: the home colour, or the
    opposite one when the left neighbour already has the home colour. palette_size >= 2."""
    if palette_size < 2:
        raise ValueError(f"palette_size must be at least 2 to tell neighbours apart, got {palette_size}")
    homes = [home_colour(token_id, palette_size) for token_id in ids]
    return neighbour_colours(homes, palette_size, step=max(1, palette_size // 2))


def run_backgrounds(ids: Iterable[int]) -> list[str]:
    """The background colour (#rrggbb) of each token run, neighbours always different."""
    return [PALETTE[i] for i in neighbour_distinct_colours(ids)]
