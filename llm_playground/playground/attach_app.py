"""`playground --attach URL`: the KV cache inspector on a live `playground serve`, read-only.

A small app of its own rather than the full playground with tabs switched off: what it can show
is what the server streams (server/inspect_stream.py), the block pool and the queues, and
nothing in it can send a request. It has the KV cache view of the local app (the same KVView
widget, fed the same CacheUpdated messages by playground/remote_reports.py instead of the engine
worker) under a line of the server's figures: steps, running and waiting sequences, requests in
the server, generated tokens per second, mean time to first token and inter-token latency. The
KV view's load test is refused with a notice (drive load at the server: benchmarks/
serve_load.py). On a data-parallel server (`serve --data-parallel N`) it shows one replica's pool
at a time: F6 ("Next replica", also in the command palette) moves to the next one (its own
stream, `?replica=i`); the header says which. The API key, when the server has one, comes from
PLAYGROUND_API_KEY.
"""
from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Iterable

from functools import partial

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.widgets import Footer, Header, Static

from llm_playground.playground.kv_view import KVView
from llm_playground.playground.messages import CacheUpdated, EngineNotice, LoadFailed, ModelReady
from llm_playground.playground.remote_reports import RemoteReports, ServerStats
from llm_playground.server.config import API_KEY_ENV


def stats_text(stats: dict, step: int) -> str:
    """The server's figures as one line of markup."""
    def ms(v):
        return "-" if v is None else f"{v * 1e3:.0f} ms"
    return (f"step [b]{step}[/] · in server [b]{stats.get('in_flight', 0)}[/] · "
            f"{stats.get('tokens_per_second', 0.0):.1f} tok/s · finished [b]{stats.get('finished', 0)}[/] · "
            f"generated [b]{stats.get('generation_tokens', 0)}[/] tokens · mean TTFT "
            f"{ms(stats.get('ttft_mean_s'))} · mean ITL {ms(stats.get('itl_mean_s'))}")


class AttachedApp(App):
    """The KV inspector of a remote server (read-only)."""
    CSS_PATH = "playground.tcss"
    TITLE = "LLM playground (attached)"
    DEFAULT_CSS = """
    #server-stats { height: auto; padding: 0 1; background: $boost; }
    """
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="attach.quit", tooltip="Leave the inspector (the server goes on)"),
        Binding("ctrl+t", "toggle_theme", "Dark/light", id="attach.theme",
                tooltip="Switch between the dark and the light theme"),
        Binding("f6", "next_replica", "Next replica", id="attach.replica",
                tooltip="Show the next data-parallel replica's pool (serve --data-parallel N)"),
    ]

    def __init__(self, url: str, api_key: str | None = None, source=None) -> None:
        super().__init__()
        self.url = url
        self.api_key = api_key
        self.replica = 0
        self._generation = 0             # messages of a replaced source are dropped
        self.source = source or self._source(0)
        self.sub_title = f"connecting to {url}…"

    def _source(self, replica: int) -> RemoteReports:
        gen = self._generation

        def post(msg) -> None:
            if gen == self._generation:
                self.post_message(msg)
        return RemoteReports(self.url, post, self.api_key, replica=replica)

    def compose(self) -> ComposeResult:
        """Header, the server's figures, the KV view, the footer."""
        yield Header()
        yield Static(f"waiting for {self.url}", id="server-stats")
        yield KVView(id="kv-view")
        yield Footer()

    def on_mount(self) -> None:
        """Start reading the server's inspector stream."""
        self.theme = "textual-dark"
        self.source.start()
        self.query_one("#kv-grid").focus()

    def on_unmount(self) -> None:
        """Stop reading the server's stream."""
        self.source.stop()

    def on_model_ready(self, msg: ModelReady) -> None:
        """Show the server's model in the header and its block formula in the KV view."""
        info = msg.info
        n = getattr(self.source, "replicas", 1)
        which = f"replica {self.replica + 1}/{n} (F6: next) · " if n > 1 else ""
        self.sub_title = (f"{which}{info.name} · {info.device} · {info.dtype} · {info.num_blocks} "
                          f"blocks · {self.url}")
        self.query_one(KVView).set_model(info)

    def on_cache_updated(self, msg: CacheUpdated) -> None:
        """A new pool snapshot from the server: to the KV view."""
        self.query_one(KVView).update_cache(msg)

    def on_server_stats(self, msg: ServerStats) -> None:
        """The server's figures: to the line above the KV view."""
        self.query_one("#server-stats", Static).update(stats_text(msg.stats, msg.step))

    def on_load_failed(self, msg: LoadFailed) -> None:
        """Not attached (unreachable, refused): say so in one line."""
        self.sub_title = "not attached"
        self.query_one("#server-stats", Static).update(msg.error)
        self.notify(msg.error, title="Not attached", severity="error", timeout=30)

    def on_engine_notice(self, msg: EngineNotice) -> None:
        """A notice from the report source (connection lost, retrying)."""
        self.notify(msg.text, severity=msg.severity, timeout=8)

    @on(KVView.LoadTestRequested)
    def _load_test(self, msg: KVView.LoadTestRequested) -> None:
        self.notify("Attached read-only: the load test runs in the local app. Drive the server "
                    "with a load generator (benchmarks/serve_load.py) and watch here.", severity="warning")

    def action_next_replica(self) -> None:
        """Read the next data-parallel replica's stream (a notice on a one-engine server)."""
        n = getattr(self.source, "replicas", 1)
        if n <= 1:
            self.notify("This server runs one engine (no --data-parallel replicas).", severity="warning")
            return
        self.source.stop()
        self._generation += 1
        self.replica = (self.replica + 1) % n
        self.sub_title = f"switching to replica {self.replica + 1}/{n}…"
        self.source = self._source(self.replica)
        self.source.start()

    def get_system_commands(self, screen) -> Iterable[SystemCommand]:
        """The stock palette commands, then one per key binding, described in words."""
        yield from super().get_system_commands(screen)
        for b in self.BINDINGS:
            yield SystemCommand(b.description, f"{b.tooltip} · {b.key}", partial(self.run_action, b.action))

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"


def run_attached(args: Namespace) -> None:
    """`playground --attach URL` (called by playground/cli.py)."""
    url = args.attach
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--attach {url!r}: give the server's URL, e.g. http://127.0.0.1:8000")
    AttachedApp(url, os.environ.get(API_KEY_ENV) or None).run()
