"""Token boundaries stay visible: neighbours never share a colour, on any terminal, and output
without colour (a pipe, a file) marks boundaries with a separator.

Found as a newcomer (issue 22): `bpe compare` drew 17 tokens as 7 runs in two colours. Its muted
palette fell to one grey (xterm-256 index 59) on 256-colour terminals. Oracles: rich's own
colour downgrade (what a 256-, 16- or 8-colour terminal is sent), the ANSI codes actually
written, and the token pieces themselves, recovered from plain output by an independent
unescaper.
"""
from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.color import Color, ColorSystem
from rich.console import Console

from llm_playground import bpe
from llm_playground.bpe import compare
from llm_playground.bpe.cli import main
from llm_playground.bpe.token_colours import PALETTE, boundary_text, neighbour_colours

PIECES = ["def", " add", "(a", ",", " b", "):", "\n", "   ", " return", " a", " +", " b", " ",
          "|", "\\", "\\n", "\t", "🙂", "!", "!", "!", " Token", "izers"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**32), max_size=60), st.integers(2, 12))
def test_neighbours_always_differ_and_keep_their_own_colour_when_free(keys, n):
    colours = neighbour_colours(keys, n)
    assert len(colours) == len(keys) and all(0 <= c < n for c in colours)
    for k in range(1, len(keys)):
        assert colours[k] != colours[k - 1]
    for k, key in enumerate(keys):          # greedy: its own colour unless the left one has it
        own = key % n
        expected = own if k == 0 or colours[k - 1] != own else (own + 1) % n
        assert colours[k] == expected


def test_one_colour_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        neighbour_colours([1, 2], 1)


@pytest.mark.parametrize("system", [ColorSystem.EIGHT_BIT, ColorSystem.STANDARD,
                                    ColorSystem.WINDOWS])
def test_palette_stays_distinct_on_terminals_with_fewer_colours(system):
    down = [Color.parse(c).downgrade(system) for c in PALETTE]
    assert len({(c.type, c.number, c.triplet) for c in down}) == len(PALETTE)


ANSI_RUN = re.compile(r"\x1b\[([0-9;]*)m([^\x1b]*)\x1b\[0m")


def background_runs(ansi: str) -> list[tuple[str, str]]:
    """(background code, text) of each styled run in ANSI output."""
    runs = []
    for codes, text in ANSI_RUN.findall(ansi):
        parts = codes.split(";")
        bg = next((";".join(parts[i:i + 3]) for i, p in enumerate(parts) if p == "48"), None)
        bg = bg or next((p for p in parts if p.isdigit() and 40 <= int(p) <= 47), None)
        runs.append((bg, text))
    return runs


@pytest.mark.parametrize("system", ["256", "standard", "truecolor"])
def test_terminal_output_gives_each_token_a_colour_unlike_its_neighbours(system):
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system=system, width=400).print(
        boundary_text(PIECES), soft_wrap=True)
    runs = background_runs(buf.getvalue())
    assert len(runs) == len(PIECES)
    assert all(bg is not None for bg, _ in runs)
    assert all(runs[k][0] != runs[k - 1][0] for k in range(1, len(runs))), runs


def unescape_split(line: str, sep: str) -> list[str]:
    """Independent reader of the separator format: split at bare separators, undo escapes."""
    pieces, cur, k = [], "", 0
    names = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    while k < len(line):
        if line[k] == "\\":
            if line.startswith(sep, k + 1):
                cur, k = cur + sep, k + 1 + len(sep)
            else:
                cur, k = cur + names[line[k + 1]], k + 2
        elif line.startswith(sep, k):
            pieces.append(cur)
            cur, k = "", k + len(sep)
        else:
            cur, k = cur + line[k], k + 1
    return pieces + [cur]


@pytest.mark.parametrize("sep", ["|", " · ", "//"])
def test_plain_output_marks_every_boundary(sep):
    buf = io.StringIO()
    console = Console(file=buf, width=40)           # not a terminal: no colour at all
    console.print(boundary_text(PIECES, sep), soft_wrap=True)
    out = buf.getvalue()
    assert "\x1b" not in out and out.endswith("\n") and out.count("\n") == 1
    assert unescape_split(out[:-1], sep) == PIECES


def test_bpe_encode_show_in_a_pipe(capsys, tmp_path):
    text = "Hello | world!\n\tTokenizers \\ 🙂 end\n"
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8")
    assert main(["encode", "-t", "cl100k_base", "--show", str(src)]) == 0
    out = capsys.readouterr().out
    tok = bpe.load("cl100k_base")
    want = compare.whole_char_pieces(tok.encode(text), lambda i: tok.decode_bytes([i]))
    assert out.count("\n") == 1 and unescape_split(out[:-1], "|") == want
    assert "".join(want) == text and len(want) > 8
    assert main(["encode", "-t", "cl100k_base", "--show", "--separator", " ¦ ", str(src)]) == 0
    assert unescape_split(capsys.readouterr().out[:-1], " ¦ ") == want


@pytest.mark.parametrize("argv,needle", [
    (["encode", "-t", "cl100k_base", "--show", "--separator", "a"], "--separator 'a'"),
    (["encode", "-t", "cl100k_base", "--separator", "|"], "--separator goes with --show"),
])
def test_bad_separator_is_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bpe: error:") and needle in err[0]


def test_bpe_compare_in_a_pipe_marks_boundaries(tmp_path, capsys, monkeypatch):
    """The CLI's own rendering path, with the (slow) measurements replaced by fixed data."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text\n" * 30)
    result = {"vocab_size": 300, "pattern": "cl100k", "threads": 1,
              "corpus": {"heldout_bytes": 10}, "rows": [],
              "segmentations": {"ours": PIECES, "cl100k_base": PIECES[::-1]},
              "sample_tokens": {"ours": len(PIECES), "cl100k_base": len(PIECES)}}
    monkeypatch.setattr(compare, "compare", lambda *a, **k: result)
    assert main(["compare", str(corpus), "--vocab-size", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, pieces in result["segmentations"].items():
        prefix = f"{name} ({len(pieces)} tokens): "
        line = next(line for line in lines if line.startswith(prefix))
        assert unescape_split(line[len(prefix):], "|") == pieces
