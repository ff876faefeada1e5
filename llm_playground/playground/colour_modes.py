"""The F7 token-colour modes of the Chat tab: off / boundaries / speculation / probability.

One toggle cycles through them (WAVE2 decision: colouring by speculation is one mode of the same
toggle, shared with the probability view). `boundaries` colours the reply's token spans so that
neighbours differ (playground/token_spans.py); `probability` colours the replies in the log
by each drawn token's probability (those sent in this mode: the others' choices were not
recorded) and shows the "what the model considered" panel (playground/considered_panel.py);
`speculation` shows the reply's tokens in that panel coloured by who chose them: a draft's
accepted proposal or the model's own token (playground/speculation_colours.py; needs
`--speculate` or the Chat settings' speculation on).

This module only names the modes and what each one says; it draws nothing.
"""
from __future__ import annotations

import enum


class ColourMode(str, enum.Enum):
    """How the Chat tab colours a reply's tokens (F7 cycles in this order)."""

    OFF = "off"
    BOUNDARIES = "boundaries"
    SPECULATION = "speculation"
    PROBABILITY = "probability"

    def next(self) -> "ColourMode":
        """The mode F7 moves to from this one."""
        modes = list(ColourMode)
        return modes[(modes.index(self) + 1) % len(modes)]

    @property
    def available(self) -> bool:
        """False for a mode whose data the engine does not produce (every mode has it now)."""
        return True

    @property
    def note(self) -> str:
        """One line saying what the mode shows (or why it shows nothing)."""
        return NOTES[self]


NOTES = {
    ColourMode.OFF: "token colours off",
    ColourMode.BOUNDARIES: "token colours: boundaries (each token its own colour)",
    ColourMode.SPECULATION: ("token colours: speculation (green: a draft's proposal the model "
                             "accepted; grey: the model's own token)"),
    ColourMode.PROBABILITY: ("token colours: probability (the model's, before the filters); "
                             "click a token or use ←/→ for what the model considered"),
}
