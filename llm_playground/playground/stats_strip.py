"""The Chat tab's live strip: TTFT, prefill and decode tokens/s with a sparkline, tokens in/out,
KV blocks held by this chat, prefix-cache hits, and with speculative decoding the acceptance
rate of this answer's own proposals and tokens per decode step (or, when the engine refused to
speculate for it, "spec off here" with the reason as the text's tooltip).

It only formats a `ChatStats` (playground/messages.py); the numbers come from the engine's
StepReports through the engine worker.
"""
from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from llm_playground.playground.messages import ChatStats
from llm_playground.playground.repaint import update_in_place


LIVE_INTERVAL_S = 0.5     # the strip's redraws while an answer streams (it is read, not watched)
PLACEHOLDER = "TTFT - · prefill - · decode - tok/s\nwaiting for the first message"


def _rate(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_stats(st: ChatStats) -> str:
    """The strip's two lines of markup for `st`; a figure not measured yet is a dash."""
    ttft = f"{st.ttft_s * 1000:,.0f} ms" if st.ttft_s is not None else "-"
    hits = f"{st.cached_prompt_tokens}/{st.prompt_tokens}" if st.prompt_tokens else "-"
    spec = ""
    if st.spec_proposed:        # speculative decoding verified something in this answer
        per_step = (st.output_tokens - 1) / st.decode_steps if st.decode_steps else 0.0
        spec = (f" · spec accept [b]{100 * st.spec_accepted / st.spec_proposed:.0f}%[/]"
                f" · [b]{per_step:.2f}[/] tok/step")
    elif st.spec_refused:       # the engine speculates, this answer cannot (tooltip: why)
        spec = " · spec [b]off[/] here"
    return (f"TTFT [b]{ttft}[/] · prefill [b]{_rate(st.prefill_tps, 0)}[/] tok/s · "
            f"decode [b]{_rate(st.decode_tps, 1)}[/] tok/s\n"
            f"in [b]{st.prompt_tokens}[/] · out [b]{st.output_tokens}[/] tok · KV [b]{st.kv_blocks}[/] blocks"
            f" · prefix hits [b]{hits}[/]{spec}"
            + (f" · all-reduce [b]{st.comm_ms:,.1f}[/] ms/step" if st.comm_ms is not None else ""))


class StatsStrip(Horizontal):
    """The Chat tab's live strip: the stats text and a decode tokens/s sparkline."""
    DEFAULT_CSS = """
    StatsStrip { height: 2; background: $boost; padding: 0 1; }
    StatsStrip > #stats-text { width: 1fr; height: 2; }
    StatsStrip > Sparkline { width: 20; height: 2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stats: ChatStats | None = None      # what the strip shows (None: the placeholder)
        self._shown_at = float("-inf")

    def clear(self) -> None:
        """Back to the placeholder (the chat was cleared: its figures are gone with it)."""
        self.stats = None
        self._shown_at = float("-inf")
        self.query_one("#stats-text", Static).update(PLACEHOLDER)
        self.query_one("#stats-spark", Sparkline).data = []

    def compose(self) -> ComposeResult:
        """The stats text (placeholder until the first message) and the sparkline."""
        yield Static(PLACEHOLDER, id="stats-text")
        spark = Sparkline([], id="stats-spark")
        spark.tooltip = "decode tokens/s over recent steps"
        yield spark

    def show(self, stats: ChatStats, live: bool = False) -> None:
        """Show `stats` in the text and the sparkline (a layout only when the text's height
        changes). `live` (an answer streaming): at most every LIVE_INTERVAL_S, except the
        first figures of an answer (its time to first token) - the strip is read, not watched."""
        now = time.monotonic()
        first = self.stats is None or (self.stats.ttft_s is None) != (stats.ttft_s is None)
        if live and not first and now - self._shown_at < LIVE_INTERVAL_S:
            return
        self._shown_at = now
        self.stats = stats
        text = self.query_one("#stats-text", Static)
        update_in_place(text, format_stats(stats), markup=True)
        if text.tooltip != stats.spec_refused:
            text.tooltip = stats.spec_refused
        spark = self.query_one("#stats-spark", Sparkline)
        if list(spark.data or []) != list(stats.recent_decode_tps):
            spark.data = list(stats.recent_decode_tps)
