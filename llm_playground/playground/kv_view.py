"""The KV cache tab: the physical block pool, each sequence's block table, the totals.

Everything shown comes from the engine's CacheReport / SequenceReport (model/engine/reports.py), posted
after every step by the engine worker: the grid is the block manager's real pool, the tables are
the tables attention reads. The totals compare the bytes the paged cache holds with what a
contiguous cache reserved at the maximum length would hold for the same sequences. The load test
(F8 or Load) posts `KVView.LoadTestRequested` upward; the app hands it to the engine worker, which
runs N concurrent synthetic requests (playground/load_test.py), on a small pool of its own when the
chat's is too large to fill; the tab then says which pool it shows, and counts what happened
(allocated, shared, copied on write, preempted, freed). Sequences forked from one prompt (n > 1)
are listed together, under a line saying how many blocks they share.
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
from llm_playground.playground.repaint import update_in_place
from llm_playground.playground.messages import CacheUpdated, LoadStats, ModelInfo

MAX_TABLE_ENTRIES = 48   # block-table entries shown per sequence before "…"


def human_bytes(n: float) -> str:
    """A byte count as text in binary units (B, KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def block_formula(info: ModelInfo) -> str:
    """How one block's bytes add up for this model, as one line of text (an 8-bit cache says
    what it stores: codes of 1 B and a scale per token and head)."""
    if info.kv_scale_bytes:
        return (f"per block ({info.kv_dtype} K/V + f16 scale per token): 2 × {info.num_layers} "
                f"layers × {info.num_kv_heads} KV heads × ({info.head_dim} dim × "
                f"{info.dtype_bytes} B + {info.kv_scale_bytes} B) × {info.block_size} tokens = "
                f"{info.bytes_per_block:,} B")
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


def parallel_text(par) -> str:
    """Each tensor-parallel rank's share (heads, bytes per block, pool), or each data-parallel
    replica's pool and load, one line each (a ParallelReport, model/engine/reports.py)."""
    if par.mode == "tensor":
        lines = [f"tensor parallel over {par.world} ranks (each holds these KV heads of every block):"]
        lines += [f"  rank {r.rank}: {r.q_heads} query / {r.kv_heads} KV heads"
                  f"{' (replicated)' if r.replicated_kv else ''} · {r.bytes_per_block:,} B per block"
                  f" · pool {human_bytes(r.kv_bytes)}" for r in par.ranks]
        return "\n".join(lines)
    lines = [f"data parallel over {par.world} replicas (each its own pool):"]
    lines += [f"  replica {r.replica}: {'up' if r.alive else 'stopped'} · {r.num_used}/{r.num_blocks}"
              f" blocks · {r.num_running} running · prefix hits {r.prefix_hits}/{r.prefix_queries}"
              f" · {r.routed} routed" for r in par.replicas]
    return "\n".join(lines)


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


def tables_text(seqs: list[SequenceReport]) -> str:
    """Every live sequence's block table, siblings (n > 1 samples of one request, forked from
    one prompt) together under a line that says what they share."""
    live = [s for s in seqs if s.status != "finished"]
    if not live:
        return "no running sequence"
    by_request: dict[object, list[SequenceReport]] = {}
    for s in live:
        by_request.setdefault(s.request_id, []).append(s)
    out = []
    for rid, group in by_request.items():
        if len(group) > 1:
            out.append(fork_text(rid, group))
        out += [table_text(s) for s in group]
    return "\n".join(out)


def fork_text(request_id: object, group: list[SequenceReport]) -> str:
    """The line over a request's forked sequences: how many blocks they share."""
    shared = 0
    for column in zip(*(s.block_table for s in group)):
        if column[0] < 0 or len(set(column)) > 1:
            break
        shared += 1
    ids = ", ".join(str(s.seq_id) for s in group)
    return (f"[i]req {request_id}: {len(group)} samples forked from one prompt (seqs {ids}) share "
            f"their first {shared} block(s); a write into a shared block copies it first "
            f"(copy-on-write), then each grows its own[/]")


def pool_text(load: LoadStats | None, cache: CacheReport) -> str:
    """Which pool the grid shows (the load test may run on a small pool of its own)."""
    if load is not None and load.own_pool:
        return (f"the load test's own pool: {load.pool_blocks} blocks, about half of what its "
                f"requests need, so it fills up (the chat's pool has {load.chat_pool_blocks})")
    return f"the chat's pool: {cache.num_blocks} blocks"


def load_text(load: LoadStats) -> str:
    """The load test's counts so far, as markup."""
    state = "done" if load.done else "running"
    return (f"load test ({state}): {load.finished}/{load.requests} requests ({load.samples} sequences)\n"
            f"allocated [b]{load.allocated}[/] · shared ≤ [b]{load.peak_shared}[/] · copy-on-write "
            f"[b]{load.copy_on_write}[/] · preempted [b]{load.preemptions}[/] · freed [b]{load.freed}[/]")


class KVView(Horizontal):
    """The KV cache tab: the block grid and block detail, the totals, the load test, the tables."""
    BINDINGS = [
        Binding("f8", "load_test", "Load test", id="kv.load",
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
        self.load_stats: LoadStats | None = None   # the load test's counts in the picture shown

    def compose(self) -> ComposeResult:
        """Grid and block detail at left; totals, formula, load test and block tables at right."""
        with Vertical(id="kv-left"):
            yield Label("Physical KV blocks (hover or arrows for details)", classes="section")
            yield Static("", id="kv-pool")
            yield BlockGrid(id="kv-grid")
            yield Static("", id="kv-block-info")
        with VerticalScroll(id="kv-right"):
            yield Static("waiting for the engine", id="kv-totals")
            yield Static("", id="kv-formula")
            shares = Static("", id="kv-parallel")    # tensor / data parallel only
            shares.display = False
            yield shares
            with Horizontal(classes="field"):
                yield Label("requests")
                yield Input("8", id="kv-load-n", type="integer")
                yield Button("Load", id="kv-load")
            yield Static("", id="kv-load-stats")
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
        self.load_stats = msg.load
        update_in_place(self.query_one("#kv-pool", Static), escape(pool_text(msg.load, msg.cache)), markup=True)
        stats = self.query_one("#kv-load-stats", Static)
        stats.display = msg.load is not None
        if msg.load is not None:
            update_in_place(stats, load_text(msg.load), markup=True)
        update_in_place(self.query_one("#kv-tables", Static), tables_text(msg.sequences), markup=True)
        shares = self.query_one("#kv-parallel", Static)
        shares.display = msg.parallel is not None
        if msg.parallel is not None:
            update_in_place(shares, escape(parallel_text(msg.parallel)), markup=True)
        grid = self.query_one(BlockGrid)
        if grid.cursor is not None and grid.cursor < len(msg.cache.blocks):
            self._show_block(grid.cursor)

    def _show_totals(self) -> None:
        totals = self.query_one("#kv-totals", Static)
        if self.cache is not None:
            update_in_place(totals, totals_text(self.cache, *self._counts, totals.content_region.width),
                            markup=True)

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
