"""The KV cache tab: the physical block pool, each sequence's block table, the totals.

Everything shown comes from the engine's CacheReport / SequenceReport (model/engine/reports.py), posted
after every step by the engine worker: the grid is the block manager's real pool, the tables are
the tables attention reads. The totals compare the bytes the paged cache holds with what a
contiguous cache reserved at the maximum length would hold for the same sequences. The load test
(F8 or Load) posts `KVView.LoadTestRequested` upward; the app hands it to the engine worker, which
runs N concurrent synthetic requests.
"""
from __future__ import annotations

from dataclasses import dataclass

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Static

from llm_playground.model.engine.reports import BlockInfo, CacheReport, SequenceReport
from llm_playground.playground.block_grid import BlockGrid
from llm_playground.playground.messages import CacheUpdated, ModelInfo

MAX_TABLE_ENTRIES = 48   # block-table entries shown per sequence before "…"


def human_bytes(n: float) -> str:
    """A byte count as text in binary units (B, KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def block_formula(info: ModelInfo) -> str:
    """How one block's bytes add up for this model, as one line of text."""
    return (f"per block: 2 × {info.num_layers} layers × {info.num_kv_heads} KV heads × "
            f"{info.head_dim} dim × {info.dtype_bytes} B × {info.block_size} tokens = "
            f"{info.bytes_per_block:,} B")


def totals_text(cache: CacheReport, running: int, waiting: int, width: int = 0) -> str:
    """The totals as markup; the colour legend goes on two lines when one line of it is wider
    than `width` (0: no limit), so that a wrap never parts a square from its count."""
    reserved = cache.reserved_bytes_equivalent
    in_use = cache.kv_bytes_in_use
    waste_pct = 100.0 * cache.kv_bytes_wasted / in_use if in_use else 0.0
    reserved_waste = 100.0 * (reserved - (in_use - cache.kv_bytes_wasted)) / reserved if reserved else 0.0
    hit = (100.0 * cache.prefix_hits / cache.prefix_queries) if cache.prefix_queries else 0.0
    legend = [("$success", "used", cache.num_used), ("$accent", "shared", cache.num_shared),
              ("$primary-lighten-2", "cached", cache.num_cached), ("dim", "free", cache.num_free)]
    one_line = "   ".join(f"■ {name} {n}" for _, name, n in legend)
    items = [f"[{style}]■[/] {name} [b]{n}[/]" for style, name, n in legend]
    rows = ([items] if not width or len(one_line) <= width else [items[:2], items[2:]])
    return (
        f"[b]{cache.num_blocks}[/] blocks × {cache.block_size} tokens\n"
        + "".join("   ".join(row) + "\n" for row in rows) +
        f"KV in use  [b]{human_bytes(in_use)}[/]\n"
        f"waste (empty slots)  [b]{human_bytes(cache.kv_bytes_wasted)}[/] ({waste_pct:.1f}%)\n"
        f"contiguous at max length  [b]{human_bytes(reserved)}[/] ({reserved_waste:.0f}% unused)\n"
        f"prefix cache  {cache.prefix_hits:,}/{cache.prefix_queries:,} tokens hit ({hit:.0f}%)\n"
        f"running {running}  waiting {waiting}  preemptions {cache.preemptions}"
    )


def block_text(block: BlockInfo) -> str:
    """One block's id, state, reference count, tokens and owners, as markup."""
    owners = ", ".join(f"seq {o}" for o in block.owners) or "none"
    return (f"block [b]{block.block_id}[/]: {block.state}, ref count {block.ref_count}, "
            f"{block.num_tokens} tokens; owners: {owners}")


def table_text(seq: SequenceReport) -> str:
    """One sequence's lengths and block table (holes as ·, long tables cut), as markup."""
    table = seq.block_table[:MAX_TABLE_ENTRIES]
    cells = " ".join("·" if b < 0 else str(b) for b in table)
    more = f" … (+{len(seq.block_table) - MAX_TABLE_ENTRIES})" if len(seq.block_table) > MAX_TABLE_ENTRIES else ""
    return (f"[b]seq {seq.seq_id}[/] req {seq.request_id} {seq.status}: prompt {seq.prompt_len} "
            f"(cached {seq.num_cached_tokens}) out {seq.output_len}, {seq.kv_tokens} tok in KV\n"
            f"  [{cells}{more}]")


class KVView(Horizontal):
    """The KV cache tab: the block grid and block detail, the totals, the load test, the tables."""
    BINDINGS = [
        Binding("f8", "load_test", "Load test", id="kv.load", show=False,
                tooltip="Start synthetic requests that allocate, share, copy, preempt and free blocks"),
    ]

    @dataclass
    class LoadTestRequested(Message):
        """The user asked for a load test of `n` synthetic requests."""
        n: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cache: CacheReport | None = None
        self.sequences: list[SequenceReport] = []
        self._counts = (0, 0)                     # running, waiting of the last update
        self._undrawn: CacheUpdated | None = None  # the newest snapshot, not drawn yet

    def compose(self) -> ComposeResult:
        """Grid and block detail at left; totals, formula, load test and block tables at right."""
        with Vertical(id="kv-left"):
            yield Label("Physical KV blocks (hover or arrows for details)", classes="section")
            yield BlockGrid(id="kv-grid")
            yield Static("", id="kv-block-info")
        with VerticalScroll(id="kv-right"):
            yield Static("waiting for the engine", id="kv-totals")
            yield Static("", id="kv-formula")
            with Horizontal(classes="field"):
                yield Label("requests")
                yield Input("8", id="kv-load-n", type="integer")
                yield Button("Load", id="kv-load")
            yield Label("Block tables (logical → physical)", classes="section")
            yield Static("no running sequence", id="kv-tables")

    def set_model(self, info: ModelInfo) -> None:
        """Show the model's bytes-per-block formula."""
        self.query_one("#kv-formula", Static).update(escape(block_formula(info)))

    def update_cache(self, msg: CacheUpdated) -> None:
        """Take a new cache snapshot; draw it now if the tab is on screen, else when it is shown
        (a hidden tab's texts would still ask for screen layouts while an answer streams)."""
        self.cache, self.sequences = msg.cache, msg.sequences
        self._counts = (msg.num_running, msg.num_waiting)
        self._undrawn = msg
        if self.is_on_screen:
            self._draw()

    def on_show(self) -> None:
        """Draw the newest snapshot when the tab comes on screen."""
        self._draw()

    def _draw(self) -> None:
        msg, self._undrawn = self._undrawn, None
        if msg is None:
            return
        self.query_one(BlockGrid).update_blocks(msg.cache.blocks)
        self._show_totals()
        live = [s for s in msg.sequences if s.status != "finished"]
        self.query_one("#kv-tables", Static).update(
            "\n".join(table_text(s) for s in live) if live else "no running sequence")
        grid = self.query_one(BlockGrid)
        if grid.cursor is not None and grid.cursor < len(msg.cache.blocks):
            self._show_block(grid.cursor)

    def _show_totals(self) -> None:
        totals = self.query_one("#kv-totals", Static)
        if self.cache is not None:
            totals.update(totals_text(self.cache, *self._counts, totals.content_region.width))

    def on_resize(self) -> None:
        """Redraw the totals for the new width."""
        self._show_totals()          # the legend's line breaks follow the width

    def _show_block(self, block_id: int | None) -> None:
        if self.cache is None or block_id is None or block_id >= len(self.cache.blocks):
            return
        self.query_one("#kv-block-info", Static).update(block_text(self.cache.blocks[block_id]))

    def on_block_grid_highlighted(self, event: BlockGrid.Highlighted) -> None:
        """Show the highlighted block's details."""
        self._show_block(event.block_id)

    def load_count(self) -> int:
        """The load test's request count, 1..256; ValueError with a readable message otherwise."""
        try:
            n = int(self.query_one("#kv-load-n", Input).value)
        except ValueError:
            raise ValueError("the number of requests must be a whole number") from None
        if not 1 <= n <= 256:
            raise ValueError("the number of requests must be between 1 and 256")
        return n

    def action_load_test(self) -> None:
        """Ask for the load test with the request count in the box (a notice when it is bad)."""
        try:
            n = self.load_count()
        except ValueError as error:
            self.notify(str(error), severity="error")
            return
        self.post_message(self.LoadTestRequested(n))

    @on(Button.Pressed, "#kv-load")
    def _load_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_load_test()
