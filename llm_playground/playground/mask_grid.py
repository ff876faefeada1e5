"""A 2-D map (attention mask or attention weights) drawn as a heat map with the Line API.

The source matrix can be large (a 2,048 x 2,048 mask): on every resize it is pooled once to the
largest square that fits the widget (`model.sparsity.downsample`, adaptive average pooling), two matrix rows per
terminal row with the upper-half-block glyph (foreground = upper cell, background = lower cell).
`render_line` then only looks up cached strips, so scrolling the app or repainting costs nothing
proportional to the matrix. The pooling (torch) and the strips are computed on a short-lived
thread (playground/off_ui_thread.py: torch on the UI thread would slow the engine for good);
`pooled` is None until the first result is in, and a result for an older matrix or size is
dropped.

It draws numbers in [0, 1]; callers decide what they mean (share of allowed pairs, or weights
divided by their maximum).
"""
from __future__ import annotations

import torch
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.strip import Strip
from textual.widget import Widget

from llm_playground.model.engine.attention_patterns import downsample
from llm_playground.playground.off_ui_thread import run_off_ui

# A perceptual-ish ramp from near black through purple and orange to pale yellow (like "magma").
RAMP = ["#0b0724", "#2c115f", "#57157e", "#812581", "#ad347c", "#d6456c",
        "#f1605d", "#fb8761", "#feb078", "#fed799", "#fcfdbf"]
UPPER_HALF = "▀"


def ramp_colour(value: float) -> str:
    """The ramp colour for `value` in [0, 1] (clamped; NaN counts as 0)."""
    value = 0.0 if value != value else max(0.0, min(1.0, value))  # NaN -> 0
    return RAMP[round(value * (len(RAMP) - 1))]


class HeatGrid(Widget):
    """Draws a (rows, cols) float matrix in [0, 1], pooled to fit."""

    DEFAULT_CSS = "HeatGrid { height: 1fr; width: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._source: torch.Tensor | None = None       # (n, m) float or bool
        self._gamma = 1.0
        self._pooled: torch.Tensor | None = None       # (2 * height, width) float in [0, 1]
        self._strips: list[Strip] = []
        self._generation = 0                            # bumped per matrix or size; results carry it
        self._drawn = 0                                 # the generation now on screen
        self.pool_count = 0                             # how many times the source was pooled

    def set_matrix(self, matrix: torch.Tensor | None, gamma: float = 1.0) -> None:
        """gamma < 1 brightens small values after pooling (0.5: a stride-64 line in a cell of
        64 keys shows as 1/8 brightness instead of 1/64)."""
        self._source = matrix
        self._gamma = gamma
        self._rebuild()

    @property
    def pooled(self) -> torch.Tensor | None:
        """The matrix as drawn now (pooled to a square that fits, in [0, 1]), or None."""
        return self._pooled

    @property
    def drawn(self) -> bool:
        """True when what is on screen is the current matrix at the current size (pooling runs
        off the UI thread), or there is nothing to draw."""
        return self._source is None or not self._source.numel() or self._drawn == self._generation

    def on_resize(self, event: events.Resize) -> None:
        """Pool the matrix again for the new size."""
        self._rebuild()

    def _rebuild(self) -> None:
        width, height = self.size.width, self.size.height
        self._generation += 1
        if self._source is None or not self._source.numel() or width <= 0 or height <= 0:
            self._strips, self._pooled, self._drawn = [], None, self._generation
            self.refresh()
            return
        # a half-block cell is about square: the same count of rows and columns keeps the
        # matrix square on screen (small matrices are stretched, their rows repeated)
        side = max(2, min(2 * height, width))
        generation = self._generation
        run_off_ui(self, self._pool, self._source, side, self._gamma,
                   deliver=lambda result, error: self._take(generation, result, error))

    def _pool(self, source: torch.Tensor, side: int, gamma: float) -> tuple[torch.Tensor, list[Strip]]:
        """(pooled (side, side) in [0, 1], its strips), off the UI thread."""
        pooled = downsample(source, side, side).clamp(0, 1) ** gamma
        return pooled, self._make_strips(pooled)

    def _take(self, generation: int, result, error: BaseException | None) -> None:
        if generation != self._generation:
            return                          # an older matrix or size
        if error is not None:
            self.notify(f"could not draw the map: {error}", severity="error")
            return
        self._pooled, self._strips = result
        self._drawn = generation
        self.pool_count += 1
        self.refresh()

    def _make_strips(self, grid: torch.Tensor) -> list[Strip]:
        values = grid.tolist()
        strips = []
        for r in range(0, len(values), 2):
            top = values[r]
            bottom = values[r + 1] if r + 1 < len(values) else None
            segs = []
            for c, v in enumerate(top):
                lower = ramp_colour(bottom[c]) if bottom is not None else None
                segs.append(Segment(UPPER_HALF, Style(color=Color.parse(ramp_colour(v)),
                                                      bgcolor=Color.parse(lower) if lower else None)))
            strips.append(Strip(segs, len(top)))
        return strips

    def render_line(self, y: int) -> Strip:
        """Cached strip `y`, or a blank line below the map."""
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.rich_style)
