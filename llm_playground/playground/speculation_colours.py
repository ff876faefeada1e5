"""The F7 `speculation` colours: a reply's tokens marked by who chose them.

With speculative decoding on (`--speculate`, or the Chat settings), every generated token is
either a draft's proposal that the target accepted or the target's own token (each verify
step ends with one; without a proposal every token is the target's). The engine says which per
token (RequestOutput.speculated); `render_speculation` draws the reply's token spans with
accepted proposals on green and the target's tokens on grey, and `summary` counts them.

It draws nothing on screen itself (playground/considered_panel.py shows the Text) and does not
know how the proposals were made.
"""
from __future__ import annotations

from typing import Any, Sequence

from rich.style import Style
from rich.text import Text

from llm_playground.playground.token_spans import group_spans, visible

ACCEPTED = Style(color="#000000", bgcolor="#7bd389")     # a draft's proposal, accepted
TARGET = Style(color="#000000", bgcolor="#c8c8c8")       # the target's own token
NO_DATA = ("token colours: speculation: no token of this reply was verified (speculation is "
           "off, or nothing was proposed); turn it on in the settings or with --speculate")


def summary(flags: Sequence[bool]) -> str:
    """One line: how many tokens were accepted proposals, of how many."""
    n, acc = len(flags), sum(1 for f in flags if f)
    share = f"{100 * acc / n:.0f}%" if n else "-"
    return (f"speculation: [on #7bd389] accepted draft [/] {acc} · [on #c8c8c8] target [/] "
            f"{n - acc} · {share} of {n} tokens came from the draft")


def render_speculation(ids: Sequence[int], flags: Sequence[bool], tokenizer: Any) -> Text:
    """The reply's token spans, each coloured by its first token: accepted proposal or target.
    `flags` is parallel to `ids` (missing entries count as the target's)."""
    out = Text(no_wrap=False)
    if tokenizer is None:
        return out
    pos = 0
    for span in group_spans(ids, tokenizer.id_to_bytes):
        accepted = pos < len(flags) and bool(flags[pos])
        out.append(visible(span.text), ACCEPTED if accepted else TARGET)
        pos += len(span.ids)
    return out
