"""A reply drawn token by token, each coloured by the probability the model gave it.

`ProbabilityStrip` shows the tokens of one generated answer (from the `TokenChoice`s the engine
reported: model/engine/token_choice.py) as coloured spans: the colour is the drawn text's
probability under the model (stage 0, before any sampling filter); neighbouring spans alternate
two shades of their colour, so a boundary stays visible between two tokens of the same bucket.
A byte-level token that ends inside a UTF-8 character is joined with the next ones into one
span (nothing shows half a character; the span's probability is the product of its tokens'),
and a stop token (a special id such as <|im_end|>) is drawn as the marker ∎, not as text.

Click a span, or focus the strip and use ←/→/Home/End, to move the cursor (a token index); the
strip posts `ProbabilityStrip.Picked` and the panel around it shows that token's candidates.
`probability_colour` and `legend` are the scale, and `probability_text` draws a reply on it without
the strip's cursor (the chat log's answers in F7's probability mode use it). The strip computes
no probability: it only reads the choices.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from llm_playground.model.engine.token_choice import TokenChoice
from llm_playground.playground.token_spans import group_spans, visible

STOP_MARK = "∎"
# (lower bound, background, text colour): a pale colour for a token the model was sure of, a
# hot one for a surprising draw (ColorBrewer YlOrRd, readable in the dark and light themes).
BUCKETS = ((0.9, "#ffffcc", "#000000"), (0.5, "#fed976", "#000000"), (0.2, "#feb24c", "#000000"),
           (0.05, "#fd8d3c", "#000000"), (0.01, "#f03b20", "#ffffff"), (0.0, "#bd0026", "#ffffff"))


def probability_colour(p: float, shade: bool = False) -> tuple[str, str]:
    """(background, text colour) for a probability; `shade` darkens the background a little
    (every other span, so neighbours of one bucket still differ)."""
    bg, fg = next((b, f) for lo, b, f in BUCKETS if p >= lo)
    if shade:
        r, g, b = (int(bg[i:i + 2], 16) / 255 for i in (1, 3, 5))
        h, l, s = colorsys.rgb_to_hls(r, g, b)
        r, g, b = colorsys.hls_to_rgb(h, max(0.0, l - 0.08), s)
        bg = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return bg, fg


def legend() -> Text:
    """One line naming the buckets of the scale."""
    out = Text("p: ")
    for lo, bg, fg in BUCKETS:
        label = f" ≥{lo:g} " if lo > 0 else " <0.01 "
        out.append(label, Style(bgcolor=bg, color=fg))
    return out


@dataclass(frozen=True)
class Unit:
    """What the strip draws as one span: whole characters and the tokens that made them."""
    text: str                   # shown text (whitespace made visible; STOP_MARK for a stop token)
    first: int                  # index of its first token in the reply
    count: int                  # how many tokens
    prob: float                 # product of the tokens' model probabilities


def units(choices: Sequence[TokenChoice], id_to_bytes: Callable[[int], bytes],
          is_special: Callable[[int], bool]) -> list[Unit]:
    """The reply's spans: runs of ordinary tokens grouped on character boundaries, each special
    token (a stop id) alone as the marker."""
    out: list[Unit] = []
    start = 0

    def flush(end: int) -> None:
        ids = [c.token_id for c in choices[start:end]]
        i = start
        for span in group_spans(ids, id_to_bytes):
            n = len(span.ids)
            logp = sum(c.logprob(0) for c in choices[i:i + n])
            out.append(Unit(visible(span.text), i, n, math.exp(logp)))
            i += n

    for t, c in enumerate(choices):
        if is_special(c.token_id):
            flush(t)
            out.append(Unit(STOP_MARK, t, 1, math.exp(c.logprob(0))))
            start = t + 1
    flush(len(choices))
    return out


def unit_style(i: int, unit: Unit) -> Style:
    """The colours of span `i` of a reply: its probability's, shaded on every other span."""
    bg, fg = probability_colour(unit.prob, shade=i % 2 == 1)
    return Style(color=fg, bgcolor=bg)


def probability_text(choices: Sequence[TokenChoice], id_to_bytes: Callable[[int], bytes],
                     is_special: Callable[[int], bool]) -> Text:
    """A reply's tokens (the TokenChoices of its sample) as spans coloured by probability, as
    the strip draws them, without cursor or click targets."""
    text = Text(no_wrap=False)
    for i, u in enumerate(units(choices, id_to_bytes, is_special)):
        text.append(u.text, unit_style(i, u))
    return text


class ProbabilityStrip(Static, can_focus=True):
    """One reply's tokens coloured by probability, with a token cursor (see the module doc)."""

    COMPONENT_CLASSES = {"probability-strip--cursor"}
    DEFAULT_CSS = """
    ProbabilityStrip { height: auto; link-style: none; link-color: #000000;
                       link-style-hover: bold underline; link-color-hover: #000000;
                       link-background-hover: $accent; }
    ProbabilityStrip > .probability-strip--cursor { background: $primary; color: $text; text-style: bold underline; }
    ProbabilityStrip:focus { background-tint: $foreground 5%; }
    """
    BINDINGS = [
        Binding("left", "move(-1)", "Previous token", id="probs.previous", show=False),
        Binding("right", "move(1)", "Next token", id="probs.next", show=False),
        Binding("home", "jump(0)", "First token", id="probs.first", show=False),
        Binding("end", "jump(-1)", "Last token", id="probs.last", show=False),
    ]
    cursor: reactive[int | None] = reactive(None, init=False)

    @dataclass
    class Picked(Message):
        """The cursor moved to token `index` of the reply."""
        strip: "ProbabilityStrip"
        index: int

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.choices: list[TokenChoice] = []
        self.units: list[Unit] = []
        self._unit_of: list[int] = []           # token index -> unit index
        self._text = Text()

    def set_choices(self, choices: Sequence[TokenChoice], id_to_bytes: Callable[[int], bytes],
                    is_special: Callable[[int], bool]) -> None:
        """Show these tokens (the cursor stays where it was when it still names a token)."""
        self.choices = list(choices)
        self.units = units(self.choices, id_to_bytes, is_special)
        self._unit_of = [u_i for u_i, u in enumerate(self.units) for _ in range(u.count)]
        if self.cursor is not None and self.cursor >= len(self.choices):
            self.cursor = None
        self._draw()

    def unit_at(self, index: int) -> Unit:
        """The span that holds token `index`."""
        return self.units[self._unit_of[index]]

    def _draw(self) -> None:
        cur = self._unit_of[self.cursor] if self.cursor is not None else None
        cursor_style = self.get_component_rich_style("probability-strip--cursor", partial=True)
        text = Text(no_wrap=False)
        for i, u in enumerate(self.units):
            style = unit_style(i, u)
            if i == cur:
                style += cursor_style
            style += Style.from_meta({"@click": f"pick({u.first})", "unit": i})
            text.append(u.text, style)
        if not self.units:
            text.append("no tokens yet", Style(dim=True))
        self._text = text
        self.update(text)

    def watch_cursor(self, index: int | None) -> None:
        """Redraw, bring the cursor's line into view and say which token is picked."""
        self._draw()
        if index is not None:
            self._scroll_to_unit(self._unit_of[index])
            self.post_message(self.Picked(self, index))

    def _scroll_to_unit(self, unit: int) -> None:
        """Scroll the nearest scrolling ancestor so the line holding `unit` is visible."""
        parent = self.parent
        if parent is None or not getattr(parent, "is_scrollable", False) or self.size.width <= 0:
            return
        lines = self._text.wrap(self.app.console, self.size.width) if self.units else []
        for y, line in enumerate(lines):
            if any(s.style and getattr(s.style, "meta", {}).get("unit") == unit
                   for s in line.spans if not isinstance(s.style, str)):
                top = self.region.y - parent.region.y + parent.scroll_y
                parent.scroll_to(y=max(0, top + y - parent.size.height // 2), animate=False)
                return

    # ---- actions -----------------------------------------------------------------------------
    def action_pick(self, index: int) -> None:
        """Put the cursor on token `index` (a click on its span)."""
        self.focus()
        if 0 <= index < len(self.choices):
            self.cursor = index

    def action_move(self, delta: int) -> None:
        """Move the cursor by `delta` tokens (onto the first or last token when there is none)."""
        if not self.choices:
            return
        if self.cursor is None:
            self.cursor = 0 if delta > 0 else len(self.choices) - 1
        else:
            self.cursor = max(0, min(len(self.choices) - 1, self.cursor + delta))

    def action_jump(self, index: int) -> None:
        """Put the cursor on the first (0) or last (-1) token."""
        if self.choices:
            self.cursor = range(len(self.choices))[index]
