"""The Chat tab's token-colour modes (F7) and what the model considered, as a ChatView mixin.

F7 cycles off -> boundaries -> speculation -> probability (playground/colour_modes.py). Boundaries
colour the answers' token spans in the log (the `token_colours` reactive and its switch);
probability colours each answer's tokens in the log by their probability and shows the
considered panel (playground/considered_panel.py), fed by the worker's ChoicesUpdated.
It does not own widgets or the reactive: ChatView (playground/chat_view.py) declares
`token_colours` and `colour_mode` and composes the log, the switch and the panel this reads.
"""
from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Switch

from llm_playground.playground.answer_view import AssistantMessage
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.considered_panel import ConsideredPanel
from llm_playground.playground.messages import ChoicesUpdated


class ChatColourModes:
    """ChatView mixin: the colour mode, the log's redraw in it, and the considered panel's feed."""

    def set_token_colours(self, on: bool) -> None:
        """Show every answer as coloured token spans (on) or as Markdown (off)."""
        self.token_colours = on

    def watch_token_colours(self, on: bool) -> None:
        """Redraw every answer in the new mode and keep the switch in step."""
        self.query_one("#token-colours", Switch).value = on
        self._redraw_answers()

    def _redraw_answers(self) -> None:
        tok = self.model.tokenizer if self.model else None
        for answer in self.query(AssistantMessage):
            answer.show_tokens(tok, self.log_mode())

    def log_mode(self) -> ColourMode:
        """How the log draws answers: boundaries (the switch), probability (F7's mode; answers
        without recorded choices stay Markdown) or plain Markdown."""
        if self.token_colours:
            return ColourMode.BOUNDARIES
        return ColourMode.PROBABILITY if self.colour_mode is ColourMode.PROBABILITY else ColourMode.OFF

    def cycle_colour_mode(self) -> ColourMode:
        """F7: off -> boundaries -> speculation -> probability -> off; returns the new mode."""
        self.set_colour_mode(self.colour_mode.next())
        return self.colour_mode

    def set_colour_mode(self, mode: ColourMode) -> None:
        """Boundaries colour the answers' token spans in the log; probability and speculation
        show the considered panel (speculation: the reply by accepted proposal / own token)."""
        self.colour_mode = mode
        if self.token_colours == (mode is ColourMode.BOUNDARIES):
            self._redraw_answers()          # the switch stays: its watcher would not redraw
        self.set_token_colours(mode is ColourMode.BOUNDARIES)
        self.query_one(ConsideredPanel).show_mode(mode)

    def on_choices(self, msg: ChoicesUpdated) -> None:
        """The worker's ChoicesUpdated (routed by the app) for the latest answer started."""
        tok = self.model.tokenizer if self.model else None
        if msg.ticket == self.ticket and self._answer is not None:   # the log's answer too
            if self._answer.set_choices(msg.choices, tok, self.log_mode()):
                self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)
        if msg.ticket == self._next_ticket:
            self.query_one(ConsideredPanel).update_choices(msg.ticket, msg.choices, tok)
