"""The physical KV block pool drawn as a grid of cells, with the Line API.

One cell per physical block, coloured by state (free / cached / used / shared; the colours are
component classes, so the theme's CSS sets them). `render_line` builds one row as a `Strip` and
caches it; `update_blocks` compares the new states with the old ones and refreshes only the rows
that changed, so a 4,096-block pool repaints in a few rows per engine step. Hover or arrow keys
move a cursor; the grid posts `BlockGrid.Highlighted` with the block id so the KV view can show
its owners and reference count.

It knows nothing about the engine: it draws the `BlockInfo` list it is given.
"""
from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from llm_playground.model.engine.reports import CACHED, FREE, SHARED, USED, BlockInfo

CELL = "■ "          # glyph + gap: two columns per block
CELL_WIDTH = 2
STATES = (FREE, CACHED, USED, SHARED)


class BlockGrid(ScrollView, can_focus=True):
    """Grid of physical KV blocks; row-level caching and refresh."""

    COMPONENT_CLASSES = {f"blockgrid--{s}" for s in STATES} | {"blockgrid--cursor"}
    DEFAULT_CSS = """
    BlockGrid { height: 1fr; }
    BlockGrid > .blockgrid--free { color: $foreground 25%; }
    BlockGrid > .blockgrid--cached { color: $primary-lighten-2; }
    BlockGrid > .blockgrid--used { color: $success; }
    BlockGrid > .blockgrid--shared { color: $accent; }
    BlockGrid > .blockgrid--cursor { background: $foreground 35%; }
    """
    BINDINGS = [
        Binding("left", "move(-1, 0)", "Previous block", show=False, id="kv.grid.left"),
        Binding("right", "move(1, 0)", "Next block", show=False, id="kv.grid.right"),
        Binding("up", "move(0, -1)", "Block above", show=False, id="kv.grid.up"),
        Binding("down", "move(0, 1)", "Block below", show=False, id="kv.grid.down"),
    ]

    @dataclass
    class Highlighted(Message):
        """The cursor moved to `block_id` (None: no block)."""
        grid: "BlockGrid"
        block_id: int | None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._states: list[str] = []
        self._cursor: int | None = None
        self._row_cache: dict[int, Strip] = {}
        self._columns = 1
        self.repaints = 0            # rows rendered (for tests and the "repaint only what changed" check)

    # ---- data --------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        """Blocks in the grid."""
        return len(self._states)

    @property
    def cursor(self) -> int | None:
        """The block under the cursor, or None."""
        return self._cursor

    def state_of(self, block_id: int) -> str:
        """The state of block `block_id` as last given."""
        return self._states[block_id]

    def update_blocks(self, blocks: list[BlockInfo]) -> int:
        """Take the new block states; refresh the rows that changed. Returns the rows refreshed."""
        new = [b.state for b in blocks]
        if len(new) != len(self._states):
            self._states = new
            self._relayout()
            return -1
        cols = self._columns
        changed_rows = {i // cols for i, (a, b) in enumerate(zip(self._states, new)) if a != b}
        self._states = new
        for row in changed_rows:
            self._row_cache.pop(row, None)
            self.refresh_line(row)
        return len(changed_rows)

    def _relayout(self) -> None:
        self._columns = max(1, (self.size.width or 80) // CELL_WIDTH)
        rows = (len(self._states) + self._columns - 1) // self._columns
        self.virtual_size = Size(self._columns * CELL_WIDTH, rows)
        self._row_cache.clear()
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        """Lay the cells out again for the new width."""
        self._relayout()

    def notify_style_update(self) -> None:
        """Drop the cached rows: the component styles may have changed."""
        super().notify_style_update()
        self._row_cache.clear()

    # ---- drawing -----------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        """Screen line `y`: its row's cached Strip (rendered on a miss), cropped to the view."""
        row = y + self.scroll_offset.y
        cached = self._row_cache.get(row)
        if cached is None:
            cached = self._render_row(row)
            self._row_cache[row] = cached
        return cached.crop(self.scroll_offset.x, self.scroll_offset.x + self.size.width)

    def _render_row(self, row: int) -> Strip:
        self.repaints += 1
        start = row * self._columns
        end = min(start + self._columns, len(self._states))
        if start >= end:
            return Strip.blank(self.size.width, self.rich_style)
        styles = {s: self.get_component_rich_style(f"blockgrid--{s}") for s in STATES}
        cursor_bg = self.get_component_rich_style("blockgrid--cursor")
        segments = []
        for block_id in range(start, end):
            style = styles.get(self._states[block_id], styles[FREE])
            if block_id == self._cursor:
                style = style + Style(bgcolor=cursor_bg.bgcolor)
            segments.append(Segment(CELL, style))
        return Strip(segments, (end - start) * CELL_WIDTH)

    # ---- cursor, mouse -----------------------------------------------------------------------
    def block_at(self, x: int, y: int) -> int | None:
        """The block at widget position (x, y), or None when no block is there."""
        col = (x + self.scroll_offset.x) // CELL_WIDTH
        if col >= self._columns:
            return None
        block = (y + self.scroll_offset.y) * self._columns + col
        return block if 0 <= block < len(self._states) else None

    def select(self, block_id: int | None, scroll: bool = False) -> None:
        """Move the cursor to `block_id` (repaints both rows, may scroll); posts Highlighted."""
        old = self._cursor
        self._cursor = block_id
        for b in (old, block_id):
            if b is not None:
                self._row_cache.pop(b // self._columns, None)
                self.refresh_line(b // self._columns)
        if block_id is not None and scroll:
            self.scroll_to(y=max(0, block_id // self._columns - self.size.height // 2), animate=False)
        self.post_message(self.Highlighted(self, block_id))

    def on_mouse_move(self, event: events.MouseMove) -> None:
        """Hovering a block selects it."""
        block = self.block_at(event.x, event.y)
        if block is not None and block != self._cursor:
            self.select(block)

    def on_click(self, event: events.Click) -> None:
        """Clicking a block focuses the grid and selects it."""
        block = self.block_at(event.x, event.y)
        if block is not None:
            self.focus()
            self.select(block)

    def action_move(self, dx: int, dy: int) -> None:
        """Move the cursor dx blocks across and dy rows down, clamped to the pool."""
        if not self._states:
            return
        cur = self._cursor if self._cursor is not None else 0
        self.select(max(0, min(len(self._states) - 1, cur + dx + dy * self._columns)), scroll=True)
