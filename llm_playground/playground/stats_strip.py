"""The Chat tab's live strip: TTFT, prefill and decode tokens/s with a sparkline, tokens in/out,
KV blocks held by this chat, prefix-cache hits.

It only formats a `ChatStats` (playground/messages.py); the numbers come from the engine's
StepReports through the engine worker.
"""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from llm_playground.playground.messages import ChatStats


def format_stats(st: ChatStats) -> str:
    """The strip's two lines of markup for `st`."""
    ttft = f"{st.ttft_s * 1000:,.0f} ms" if st.ttft_s is not None else "-"
    hits = f"{st.cached_prompt_tokens}/{st.prompt_tokens}" if st.prompt_tokens else "-"
    return (f"TTFT [b]{ttft}[/] · prefill [b]{st.prefill_tps:,.0f}[/] tok/s · decode [b]{st.decode_tps:,.1f}[/] tok/s\n"
            f"in [b]{st.prompt_tokens}[/] · out [b]{st.output_tokens}[/] tok · KV [b]{st.kv_blocks}[/] blocks"
            f" · prefix hits [b]{hits}[/]")


class StatsStrip(Horizontal):
    """The Chat tab's live strip: the stats text and a decode tokens/s sparkline."""
    DEFAULT_CSS = """
    StatsStrip { height: 2; background: $boost; padding: 0 1; }
    StatsStrip > #stats-text { width: 1fr; height: 2; }
    StatsStrip > Sparkline { width: 20; height: 2; }
    """

    def compose(self) -> ComposeResult:
        """The stats text (placeholder until the first message) and the sparkline."""
        yield Static("TTFT - · prefill - · decode - tok/s\nwaiting for the first message", id="stats-text")
        spark = Sparkline([], id="stats-spark")
        spark.tooltip = "decode tokens/s over recent steps"
        yield spark

    def show(self, stats: ChatStats) -> None:
        """Show `stats` in the text and the sparkline."""
        self.stats = stats
        self.query_one("#stats-text", Static).update(format_stats(stats))
        self.query_one("#stats-spark", Sparkline).data = list(stats.recent_decode_tps)
