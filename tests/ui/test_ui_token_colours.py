"""Token colours: neighbouring tokens never share a colour (playground/token_colours.py), in the
pure function and in the runs the Chat and Tokenizers tabs draw (token_spans.render_spans).

Properties over any id sequence (hypothesis): every neighbour pair differs; a token has its
id's home colour unless its left neighbour already has that colour (stable per id where the
rule allows). On screen: the tokens a real tokenizer makes of any text, drawn as runs, never
put the same background on two neighbouring runs, and the runs spell the text.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_engine import chat_tokenizer

from llm_playground.playground.token_colours import (PALETTE, home_colour, neighbour_distinct_colours,
                                                     run_backgrounds)
from llm_playground.playground.token_spans import group_spans, render_spans, visible

ids_lists = st.lists(st.integers(min_value=0, max_value=200_000), max_size=200)


@given(ids_lists, st.integers(min_value=2, max_value=12))
def test_neighbours_always_differ(ids, palette_size):
    colours = neighbour_distinct_colours(ids, palette_size)
    assert len(colours) == len(ids)
    assert all(0 <= c < palette_size for c in colours)
    assert all(a != b for a, b in zip(colours, colours[1:]))


@given(ids_lists)
def test_a_token_keeps_its_home_colour_unless_its_left_neighbour_has_it(ids):
    colours = neighbour_distinct_colours(ids)
    for i, (tid, colour) in enumerate(zip(ids, colours)):
        home = home_colour(tid)
        if i == 0 or colours[i - 1] != home:
            assert colour == home
        else:
            assert colour != home


@given(st.lists(st.sampled_from([7, 7, 7, 1234]), min_size=2, max_size=50))
def test_repeated_ids_alternate(ids):
    """The case a hue walk could not help: the same id many times in a row."""
    colours = run_backgrounds(ids)
    assert all(a != b for a, b in zip(colours, colours[1:]))
    assert set(colours) <= set(PALETTE)


def test_a_palette_of_one_colour_is_refused():
    with pytest.raises(ValueError, match="palette_size"):
        neighbour_distinct_colours([1, 2], 1)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab the ing\n!,🙂東"), max_size=60))
def test_drawn_runs_of_real_tokens_never_share_a_background(text):
    """The Tokenizers tab's and the chat's drawing: one run per span, neighbours differ, and the
    runs spell the text (whitespace drawn visible)."""
    tok = chat_tokenizer()
    spans = group_spans(tok.encode_ordinary(text), tok.id_to_bytes)
    drawn = render_spans(spans)
    runs = [(drawn.plain[s.start:s.end], s.style.bgcolor) for s in drawn.spans]
    assert [r[0] for r in runs] == [visible(s.text) for s in spans]
    assert all(a[1] != b[1] for a, b in zip(runs, runs[1:]))
