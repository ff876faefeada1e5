"""The Chat tab's live strip: TTFT, prefill and decode tokens/s with a sparkline, tokens in/out,
KV blocks held by this chat, prefix-cache hits.

It only formats a `ChatStats` (playground/messages.py); the numbers come from the engine's
StepReports through the engine worker.
"""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from playground.messages import ChatStats


def format_stats(st: ChatStats, block_size: int | None = None) -> str:
    ttft = f"{st.ttft_s * 1000:.0f} ms" if st.ttft_s is not None else "-"
    hits = (f"{st.cached_prompt_tokens}/{st.prompt_tokens} tok"
            if st.prompt_tokens else "-")
    return (f"TTFT [b]{ttft}[/]  prefill [b]{st.prefill_tps:,.0f}[/] tok/s  "
            f"decode [b]{st.decode_tps:,.1f}[/] tok/s  in [b]{st.prompt_tokens}[/]  "
            f"out [b]{st.output_tokens}[/]  KV [b]{st.kv_blocks}[/] blocks  prefix hits [b]{hits}[/]")


class StatsStrip(Horizontal):
    DEFAULT_CSS = """
    StatsStrip { height: 1; background: $boost; }
    StatsStrip > #stats-text { width: 1fr; height: 1; }
    StatsStrip > Sparkline { width: 24; height: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first message", id="stats-text")
        yield Sparkline([], id="stats-spark")

    def show(self, stats: ChatStats) -> None:
        self.stats = stats
        self.query_one("#stats-text", Static).update(format_stats(stats))
        self.query_one("#stats-spark", Sparkline).data = list(stats.recent_decode_tps)
