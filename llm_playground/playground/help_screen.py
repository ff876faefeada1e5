"""F1 help: what each tab shows and every key binding (read from the app's bindings)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

VIEWS_HELP = """\
# LLM playground

**Chat**: talk to the model through its chat template. The side panel holds the system prompt (the
model's own default until you edit it) and the sampling settings; the strip under the conversation
shows time to first token, prefill and decode speed (sparkline: recent decode steps), tokens in and
out, the KV blocks this chat holds and the prompt tokens served by the prefix cache. Esc stops an
answer and keeps its text; Ctrl+R regenerates with the next seed.

**Tokenizers**: the same text split by the model's tokenizer, cl100k_base, o200k_base, tokenizers
you train and SentencePiece models you add. Neighbouring tokens never share a colour; `·` is a
space, `↵` a newline. Click a token for its id, bytes and merges.

**KV cache**: every physical block of the paged cache: grey free, light blue cached (prefix
cache, evictable), green used (one owner), orange shared (several owners). Hover for owners and
reference count. *Load* (F8) starts synthetic requests, on a small pool of their own when the
chat's is too large to fill, to watch blocks allocated, shared, copied on write, preempted, freed.

**Attention**: the mask of an attention pattern and the real attention weights of one layer and
head for the last prompt. *Apply* sends the pattern to the engine for the next requests.

Ctrl+P opens the command palette with every action below, from any tab.
"""
TAB_NAMES = {"chat": "Chat", "tokenizers": "Tokenizers", "kv": "KV cache", "attention": "Attention"}


class HelpScreen(ModalScreen[None]):
    """The F1 help screen: what each tab shows and a table of the key bindings."""
    BINDINGS = [Binding("escape,f1", "dismiss", "Close help", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: 85%; border: thick $primary;
                                  background: $surface; }   /* 80 columns: narrower, not cut */
    """

    def __init__(self, bindings: list[tuple[Binding, str | None]]) -> None:
        super().__init__()
        self.shown_bindings = bindings      # (binding, the tab whose view owns it or None)

    def compose(self) -> ComposeResult:
        """The tabs' help and the key table, as scrollable Markdown."""
        rows = ["| key | action | where | id |", "| --- | --- | --- | --- |"]
        for b, tab in self.shown_bindings:
            where = "anywhere" if tab is None else TAB_NAMES.get(tab, tab)
            rows.append(f"| `{b.key}` | {b.description} | {where} | `{b.id}` |")
        with VerticalScroll():
            yield Markdown(VIEWS_HELP + "\n## Keys\n\n" + "\n".join(rows))
