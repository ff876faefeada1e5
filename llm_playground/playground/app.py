"""The Textual app: header, four tabs (Chat, Tokenizers, KV cache, Attention), footer, help.

`PlaygroundApp` starts the engine worker (playground/engine_worker.py: a thread worker named
"engine" that loads the model and then steps the engine) and routes its messages to the views.
Every key binding has an id and a description and also appears in the command palette (Ctrl+P);
F1 shows help. Errors from the worker become notifications; nothing a user types can end the app
with a traceback. `run_app(args)` is what `playground` (no subcommand) calls.

The app never touches the engine directly: the views ask the worker, the worker answers with
messages.
"""
from __future__ import annotations

from argparse import Namespace
from functools import partial
from typing import Iterable

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, TabbedContent, TabPane

from llm_playground.playground.attention_view import AttentionView
from llm_playground.playground.chat_view import ChatView
from llm_playground.playground.engine_worker import EngineFactory, EngineWorker, one_line
from llm_playground.playground.help_screen import HelpScreen
from llm_playground.playground.kv_view import KVView, human_bytes
from llm_playground.playground.messages import (AttentionReady, CacheUpdated, ChatFinished, ChatProgress,
                                 ChoicesUpdated, EngineNotice, LoadFailed, LoadProgress, ModelInfo, ModelReady,
                                 PatternChanged, TokenizerLoaded, TokenizerUnavailable)
from llm_playground.playground.tokenizer_sources import from_bpe, load_reference
from llm_playground.playground.tokenizer_view import REFERENCES, TokenizerView

DARK, LIGHT = "textual-dark", "textual-light"
# Below these sizes the screen gets the class -narrow / -short and playground.tcss switches to a
# compact layout (80 x 24 shows every label in full); at and above them the layout is the wide one.
NARROW_WIDTH, SHORT_HEIGHT = 120, 30
SHORT_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}   # for the narrow header
TAB_FOCUS = {"chat": "#prompt", "tokenizers": "#tok-text", "kv": "#kv-grid", "attention": "#attn-spec"}

APP_BINDINGS = [
    Binding("f1", "help", "Help", id="app.help"),
    Binding("f2", "show_tab('chat')", "Chat", id="app.tab.chat"),
    Binding("f3", "show_tab('tokenizers')", "Tokenizers", id="app.tab.tokenizers"),
    Binding("f4", "show_tab('kv')", "KV cache", id="app.tab.kv"),
    Binding("f5", "show_tab('attention')", "Attention", id="app.tab.attention"),
    Binding("ctrl+t", "toggle_theme", "Dark/light", id="app.theme"),
    Binding("escape", "cancel_generation", "Stop answer", id="chat.stop"),
    Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
    Binding("ctrl+l", "clear_chat", "Clear chat", id="chat.clear", show=False),
    Binding("f6", "copy_reply", "Copy reply", id="chat.copy", show=False),
    Binding("f7", "toggle_token_colours", "Token colours", id="chat.token_colours", show=False),
    Binding("f8", "load_test", "Load test", id="kv.load", show=False),
    Binding("f9", "apply_pattern", "Apply pattern", id="attention.apply", show=False),
    Binding("f10", "attention_weights", "Attention weights", id="attention.weights", show=False),
    Binding("ctrl+n", "train_tokenizer", "Train tokenizer", id="tokenizers.train", show=False),
    Binding("ctrl+o", "add_sentencepiece", "Add SentencePiece model", id="tokenizers.add_spm",
            show=False),
]


class PlaygroundFooter(Footer):
    """The footer, its tab keys (F2-F5) marked `-tab-key`: a narrow screen leaves them out (the
    tabs are on screen to click, and F1 lists every key) so that the others fit."""

    def compose(self) -> ComposeResult:
        """The stock footer's keys, the tab keys marked `-tab-key`."""
        for widget in super().compose():
            if str(getattr(widget, "action", "")).startswith("show_tab"):      # a FooterKey
                widget.add_class("-tab-key")
            yield widget


class PlaygroundApp(App):
    """The playground app: runs the engine worker and routes its messages to the four tabs."""
    CSS_PATH = "playground.tcss"
    TITLE = "LLM playground"
    BINDINGS = APP_BINDINGS
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_WIDTH, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (SHORT_HEIGHT, "-tall")]

    def __init__(self, engine_factory: EngineFactory, model_label: str = "default model",
                 references: Iterable[str] = REFERENCES, cursor_blink: bool = True) -> None:
        super().__init__()
        self.engine_factory = engine_factory
        self.model_label = model_label
        self.references = tuple(references)
        self.cursor_blink = cursor_blink
        self.model_info: ModelInfo | None = None
        self.engine_worker = EngineWorker(self.post_message, engine_factory)
        self.sub_title = f"loading {model_label}…"

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        """Header, loading bar, the four tabs and the footer."""
        yield Header()
        with Horizontal(id="loading"):
            yield Label(f"Loading {self.model_label}…", id="loading-label")
            yield ProgressBar(total=None, show_eta=False, id="loading-bar")
        with TabbedContent(initial="chat", id="tabs"):
            with TabPane("Chat", id="chat"):
                yield ChatView(id="chat-view")
            with TabPane("Tokenizers", id="tokenizers"):
                yield TokenizerView(id="tokenizer-view")
            with TabPane("KV cache", id="kv"):
                yield KVView(id="kv-view")
            with TabPane("Attention", id="attention"):
                yield AttentionView(id="attention-view")
        yield PlaygroundFooter()

    def on_mount(self) -> None:
        """Set the theme, start the engine worker and the reference loaders, focus the prompt."""
        self.theme = DARK
        if not self.cursor_blink:
            for widget in self.query("Input, TextArea"):
                widget.cursor_blink = False
        self.run_worker(self.engine_worker.run, name="engine", group="engine", thread=True,
                        exit_on_error=False)
        for name in self.references:
            self.run_worker(partial(self._load_reference, name), name=f"load-{name}",
                            group="references", thread=True, exit_on_error=False)
        self.query_one("#prompt").focus()

    def _load_reference(self, name: str) -> None:
        try:
            self.post_message(TokenizerLoaded(load_reference(name)))
        except Exception as error:
            self.post_message(TokenizerUnavailable(name, one_line(error)))

    @property
    def chat(self) -> ChatView:
        """The chat view."""
        return self.query_one(ChatView)

    # ---- worker messages ---------------------------------------------------------------------
    def _view(self, cls):
        """The view of that class, or None while the app is shutting down (late worker messages)."""
        try:
            return self.query_one(cls)
        except NoMatches:
            return None

    def on_load_progress(self, msg: LoadProgress) -> None:
        """Show the loading stage and progress."""
        self.query_one("#loading-label", Label).update(f"Loading {self.model_label}: {msg.stage}")
        self.query_one("#loading-bar", ProgressBar).update(total=1.0 if msg.fraction is not None else None,
                                                            progress=msg.fraction or 0.0)

    def _narrow(self) -> bool:
        return self.size.width < NARROW_WIDTH

    def _show_model_line(self) -> None:
        """The header's model line; a narrow screen gets the short form (the KV cache's size in
        bytes only, dtypes as bf16 / f16 / f32), which fits 80 columns for the default model."""
        info = self.model_info
        if info is None:
            return
        total = human_bytes(info.num_blocks * info.bytes_per_block)
        dtype = info.dtype
        if self._narrow():
            for name, short in SHORT_DTYPES.items():
                dtype = dtype.replace(name, short)
            kv = f"KV {total}"
        else:
            kv = f"KV {info.num_blocks} blocks × {info.block_size} tokens ({total})"
        self.sub_title = f"{info.name} · {info.device} · {dtype} · {kv}"

    def format_title(self, title: str, sub_title: str) -> Content:
        """On a narrow screen, once a model is loaded, the header shows the model line alone (the
        app's name would push it past the edge)."""
        if self._narrow() and self.model_info is not None and sub_title:
            return Content(sub_title).stylize("dim")
        return super().format_title(title, sub_title)

    def on_resize(self) -> None:
        """Redraw the header's model line for the new width."""
        self._show_model_line()

    async def on_model_ready(self, msg: ModelReady) -> None:
        """Hide the loading bar and hand the model's details to every view."""
        info = self.model_info = msg.info
        self._show_model_line()
        self.query_one("#loading").display = False
        self.query_one(KVView).set_model(info)
        self.query_one(ChatView).set_model(info.chat_template)
        self.query_one(AttentionView).set_engine_pattern(info.pattern)
        await self.query_one(TokenizerView).add_entry(from_bpe(info.tokenizer, info.name, "model"))

    def on_load_failed(self, msg: LoadFailed) -> None:
        """Say the model did not load and how to restart; the Tokenizers tab stays usable."""
        self.sub_title = "no model loaded"
        self.query_one("#loading-label", Label).update(
            f"Could not load {self.model_label}. Restart with --model PATH (a .gguf file or a Hugging "
            "Face folder); the Tokenizers tab still works.")
        self.query_one("#loading-bar").display = False
        if chat := self._view(ChatView):
            chat.set_model_failed(msg.error)
        self.notify(f"{msg.error}\nRestart with --model PATH to a .gguf file or a Hugging Face folder.",
                    title="Model not loaded", severity="error", timeout=30)

    async def on_chat_progress(self, msg: ChatProgress) -> None:
        """Pass the progress to the chat view."""
        if chat := self._view(ChatView):
            await chat.on_progress(msg)

    async def on_chat_finished(self, msg: ChatFinished) -> None:
        """Pass the finished answer to the chat view."""
        if chat := self._view(ChatView):
            await chat.on_finished(msg)

    def on_choices_updated(self, msg: ChoicesUpdated) -> None:
        """Pass what the sampler considered to the chat view (its considered panel)."""
        if chat := self._view(ChatView):
            chat.on_choices(msg)

    def on_cache_updated(self, msg: CacheUpdated) -> None:
        """Pass the cache snapshot to the KV view."""
        if kv := self._view(KVView):
            kv.update_cache(msg)

    def on_engine_notice(self, msg: EngineNotice) -> None:
        """Show the engine's notice as a notification."""
        self.notify(msg.text, severity=msg.severity, timeout=8)

    def on_pattern_changed(self, msg: PatternChanged) -> None:
        """Show the engine's new pattern in the Attention tab and say so."""
        self.query_one(AttentionView).set_engine_pattern(msg.spec)
        self.notify(f"Attention pattern {msg.spec}: the next requests run with it.")

    def on_attention_ready(self, msg: AttentionReady) -> None:
        """Pass the attention weights to the Attention view."""
        if view := self._view(AttentionView):
            view.show_weights(msg)

    async def on_tokenizer_loaded(self, msg: TokenizerLoaded) -> None:
        """Add the loaded reference tokenizer to the Tokenizers tab."""
        if view := self._view(TokenizerView):
            await view.add_entry(msg.entry)

    def on_tokenizer_unavailable(self, msg: TokenizerUnavailable) -> None:
        """Warn that a reference tokenizer is not available."""
        self.notify(f"{msg.name} is not available: {msg.error}", severity="warning")

    # ---- actions -----------------------------------------------------------------------------
    def action_help(self) -> None:
        """Show the help screen (every key binding)."""
        self.push_screen(HelpScreen(list(APP_BINDINGS)))

    def action_show_tab(self, tab: str) -> None:
        """Switch tabs and move the focus into the new tab (a focused widget left behind in a
        hidden tab would switch the tab back)."""
        self.query_one(TabbedContent).active = tab
        self.set_focus(self.query_one(TAB_FOCUS[tab]))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Move the focus into the newly shown tab unless it is already there."""
        pane = event.pane.id
        focused = self.focused
        if pane in TAB_FOCUS and (focused is None or pane not in {a.id for a in focused.ancestors}):
            self.set_focus(self.query_one(TAB_FOCUS[pane]))

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = LIGHT if self.theme == DARK else DARK

    def action_cancel_generation(self) -> None:
        """Stop the answer being generated, keeping what it wrote."""
        if self.chat.cancel():
            self.notify("Stopping the answer; what it wrote is kept.")

    async def action_regenerate(self) -> None:
        """Generate the last answer again."""
        await self.chat.regenerate()

    async def action_clear_chat(self) -> None:
        """Clear the conversation."""
        await self.chat.clear()

    def action_copy_reply(self) -> None:
        """Copy the last reply to the clipboard."""
        text = self.chat.last_reply()
        if not text:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(text)
        self.notify(f"Copied {len(text)} characters.")

    def action_toggle_token_colours(self) -> None:
        """Cycle the chat's token colours: off, boundaries, speculation, probability."""
        self.chat.cycle_colour_mode()

    def _model_loaded(self) -> bool:
        if self.model_info is None:
            self.notify("The model is not loaded yet.", severity="warning")
            return False
        return True

    def action_load_test(self) -> None:
        """Start the KV tab's load test (its request count) and show the KV tab."""
        try:
            n = self.query_one(KVView).load_count()
        except ValueError as error:
            self.notify(str(error), severity="error")
            return
        if self._model_loaded():
            self.engine_worker.load_test(n)
            self.action_show_tab("kv")

    def action_apply_pattern(self) -> None:
        """Show the typed pattern's mask and have the engine use it for new requests."""
        view = self.query_one(AttentionView)
        spec = self.query_one("#attn-spec").value.strip()
        try:
            view.show_mask(spec)
        except ValueError as error:
            self.notify(f"{error}", title="Pattern", severity="error")
            return
        if self._model_loaded():
            self.engine_worker.set_pattern(view.shown_pattern)

    def action_attention_weights(self) -> None:
        """Ask the engine for the chosen layer and head's weights over the last prompt."""
        view = self.query_one(AttentionView)
        try:
            layer, head = view.layer_head()
        except ValueError as error:
            self.notify(str(error), severity="error")
            return
        if not self._model_loaded():
            return
        info = self.model_info
        if not (0 <= layer < info.num_layers and 0 <= head < info.num_heads):
            self.notify(f"layer must be 0..{info.num_layers - 1} and head 0..{info.num_heads - 1}",
                        severity="error")
            return
        ids = self.chat.last_prompt_ids
        if not ids:
            self.notify("Send a chat message first: the weights are computed for the last prompt.",
                        severity="warning")
            return
        self.notify(f"Computing layer {layer} head {head} over {len(ids)} tokens…")
        self.engine_worker.attention(ids, layer, head)

    def action_train_tokenizer(self) -> None:
        """Show the Tokenizers tab and start training a tokenizer."""
        self.action_show_tab("tokenizers")
        self.query_one(TokenizerView).start_training()

    async def action_add_sentencepiece(self) -> None:
        """Show the Tokenizers tab and add a SentencePiece model."""
        self.action_show_tab("tokenizers")
        await self.query_one(TokenizerView).add_sentencepiece()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The stock palette commands, then one per key binding."""
        yield from super().get_system_commands(screen)
        for b in APP_BINDINGS:
            yield SystemCommand(b.description, f"{b.key} · {b.id}", partial(self.run_action, b.action))


def run_app(args: Namespace) -> None:
    """Start the playground with the engine the flags describe (called by playground/cli.py)."""
    from llm_playground.playground.engine_factory import real_factory
    from llm_playground.playground.tokenizer_sources import start_process_helpers
    label = getattr(args, "model", None) or "the default model"
    factory = real_factory(args)  # a bad flag value fails here, one line, before anything starts
    start_process_helpers()      # before Textual replaces sys.stderr (tokenizer training workers)
    PlaygroundApp(factory, model_label=str(label)).run()
