"""The Chat tab's "what the model considered" panel: the last reply by probability, and one token's
candidates before and after each sampling filter.

`ConsideredPanel` holds a head line (which answer and sample, how many tokens), a
`ProbabilityStrip` (playground/probability_strip.py: the reply's tokens coloured by the model's
probability; click or ←/→ to pick one), the colour legend, and a `CandidatesTable`
(playground/candidates_table.py) for the picked token. It is shown in the F7 colour modes
`probability` and `speculation` (playground/colour_modes.py); in `speculation` it shows the
reply's tokens coloured by who chose them (a draft's accepted proposal or the model's own token,
playground/speculation_colours.py, from the per-token flags the engine reports and the host
passes with `show_speculation`), or one line saying the reply has no such data, and nothing else.

Data comes from `ChoicesUpdated` messages (playground/messages.py) that the engine worker posts
with the `TokenChoice`s the engine's sampler reported in the same steps that drew the tokens;
the host routes them here with `update_choices` (and says with `begin_answer` when an answer
starts, and whether it asked for them: the Chat asks only in `probability` mode, so nothing is
computed for the panel while it is not in use). `[` / `]` switch between the samples of an
n > 1 answer. The panel never asks the engine for anything.
"""
from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from llm_playground.model.engine.token_choice import TokenChoice
from llm_playground.playground.candidates_table import CandidatesTable
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.probability_strip import ProbabilityStrip, legend
from llm_playground.playground.speculation_colours import NO_DATA, render_speculation, summary

# Candidates per stage the Chat asks the engine for (SamplingParams.logprobs).
CANDIDATES_PER_STAGE = 8
WAITING = ("What the model considered: send a message in this mode; each token's candidates "
           "are recorded as it is drawn.")
NOT_RECORDED = ("What the model considered: the last answer was generated in another colour mode, "
                "so its candidates were not recorded (that costs a little decode speed); send or "
                "regenerate (ctrl+r) in this mode.")


class ConsideredPanel(Vertical):
    """The last reply's tokens by probability and the picked token's candidates (module doc)."""

    SCOPED_CSS = False          # for the Screen.-short rule; every other rule starts ConsideredPanel
    DEFAULT_CSS = """
    ConsideredPanel { height: auto; max-height: 70%; padding: 0 1; border-top: solid $accent 40%;
                      display: none; overflow-y: auto; }
    Screen.-short ConsideredPanel > #considered-scroll { max-height: 3; }
    ConsideredPanel.-shown { display: block; }
    ConsideredPanel > #considered-head { height: auto; width: 100%; text-style: bold; }
    ConsideredPanel > #considered-scroll { height: auto; max-height: 5; }
    ConsideredPanel > #considered-legend { height: 1; }
    ConsideredPanel > #considered-note { height: auto; width: 100%; color: $text-warning; }
    ConsideredPanel.-speculation > #considered-note { color: $text; }
    ConsideredPanel.-speculation > #considered-scroll,
    ConsideredPanel.-speculation > #considered-legend,
    ConsideredPanel.-speculation > CandidatesTable { display: none; }
    """
    BINDINGS = [
        Binding("left_square_bracket", "sample(-1)", "Previous sample", id="probs.sample_previous",
                show=False),
        Binding("right_square_bracket", "sample(1)", "Next sample", id="probs.sample_next", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = ColourMode.OFF
        self.ticket: int | None = None
        self.choices: tuple[tuple[TokenChoice, ...], ...] = ()
        self.sample = 0
        self.tokenizer = None
        self.spec: tuple = ()      # (ids per sample, speculated flags per sample) of the reply

    def compose(self) -> ComposeResult:
        """Head line, the strip (scrolls), the legend, the candidates table, the mode note."""
        yield Label(WAITING, id="considered-head")
        with VerticalScroll(id="considered-scroll"):
            yield ProbabilityStrip(id="considered-strip")
        yield Static(legend(), id="considered-legend")
        yield CandidatesTable(id="considered-table")
        yield Label("", id="considered-note")

    # ---- what the host calls -----------------------------------------------------------------
    def show_mode(self, mode: ColourMode) -> None:
        """Show the panel in `probability` and `speculation` modes (the latter as a note only)."""
        self.mode = mode
        self.set_class(mode in (ColourMode.PROBABILITY, ColourMode.SPECULATION), "-shown")
        self.set_class(mode is ColourMode.SPECULATION, "-speculation")
        note = self.query_one("#considered-note", Label)
        note.update("" if mode.available else mode.note)
        note.display = not mode.available or mode is ColourMode.SPECULATION
        if mode is ColourMode.SPECULATION:
            self._show_speculation()
        if self.has_class("-shown"):
            self._show_sample()         # what came while the panel was hidden

    def update_choices(self, ticket: int, choices: Sequence[Sequence[TokenChoice]], tokenizer) -> None:
        """The choices of generation `ticket` so far (per sample); a new ticket starts afresh."""
        strip = self.query_one(ProbabilityStrip)
        if ticket != self.ticket:
            self.ticket, self.sample = ticket, 0
            strip.cursor = None
            self.query_one(CandidatesTable).clear()
        self.choices = tuple(tuple(c) for c in choices)
        self.tokenizer = tokenizer
        if self.has_class("-shown"):     # hidden: kept, drawn when shown (no work per step)
            self._show_sample()

    def show_speculation(self, ids: Sequence[Sequence[int]], flags: Sequence[Sequence[bool]],
                         tokenizer) -> None:
        """The reply's ids and, per token, whether it was a draft's accepted proposal (the
        stats' `speculated`; empty when nothing was verified); drawn in `speculation` mode."""
        self.spec = (tuple(map(tuple, ids)), tuple(map(tuple, flags)))
        self.tokenizer = tokenizer
        if self.mode is ColourMode.SPECULATION:
            self._show_speculation()

    def _show_speculation(self) -> None:
        note = self.query_one("#considered-note", Label)
        ids, flags = self.spec if self.spec else ((), ())
        if not any(any(f) for f in flags) or self.tokenizer is None:
            note.update(NO_DATA)
            return
        sample = min(self.sample, len(ids) - 1)
        text = Text.from_markup(summary(flags[sample]) + "\n")
        text.append_text(render_speculation(ids[sample], flags[sample], self.tokenizer))
        note.update(text)

    def begin_answer(self, ticket: int, recorded: bool) -> None:
        """A new answer started; `recorded` says whether it asks the engine for its choices."""
        self.clear(WAITING if recorded else NOT_RECORDED)
        self.ticket = ticket

    def clear(self, head: str = WAITING) -> None:
        """Forget the reply shown (the chat was cleared)."""
        self.ticket, self.choices, self.sample = None, (), 0
        strip = self.query_one(ProbabilityStrip)
        strip.cursor = None
        strip.set_choices([], bytes, lambda i: False)
        self.query_one(CandidatesTable).clear()
        self.query_one("#considered-head", Label).update(head)

    # ---- inside ------------------------------------------------------------------------------
    def _show_sample(self) -> None:
        if not self.choices or self.tokenizer is None:
            return
        tok = self.tokenizer
        mine = self.choices[self.sample]
        strip = self.query_one(ProbabilityStrip)
        strip.set_choices(mine, tok.id_to_bytes, tok.is_special)
        n = len(self.choices)
        which = f" · sample {self.sample + 1}/{n} ([ ] to switch)" if n > 1 else ""
        self.query_one("#considered-head", Label).update(
            f"What the model considered{which} · {len(mine)} tokens · colour: the model's p")
        if strip.cursor is not None:
            self._show_token(strip.cursor)

    def _show_token(self, index: int) -> None:
        mine = self.choices[self.sample] if self.choices else ()
        if 0 <= index < len(mine):
            tok = self.tokenizer
            self.query_one(CandidatesTable).show(mine[index], index, tok.id_to_bytes, tok.is_special)

    def on_probability_strip_picked(self, message: ProbabilityStrip.Picked) -> None:
        """The strip's cursor moved: show that token's candidates."""
        message.stop()
        self._show_token(message.index)

    def action_sample(self, delta: int) -> None:
        """Show the previous / next sample of an n > 1 answer."""
        if len(self.choices) > 1:
            self.sample = (self.sample + delta) % len(self.choices)
            self.query_one(ProbabilityStrip).cursor = None
            self.query_one(CandidatesTable).clear()
            self._show_sample()
