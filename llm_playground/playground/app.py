"""The Textual app shell: header, four tabs (Chat, Tokenizers, KV cache, Attention), footer, help.

The shell only routes. It starts the engine worker (playground/engine_worker.py, on a thread
worker named "engine") and passes its messages to the views; the views post their requests
upward (`ChatView.Generate`, `ChatView.Cancel`, `KVView.LoadTestRequested`,
`AttentionView.PatternRequested`, `AttentionView.WeightsRequested`, `ChatView.PromptChanged`)
and the shell hands each to the worker or to the view that needs it. Each view owns its key
bindings (they show in the footer while the view has the focus); the shell owns F1 (help),
F2-F5 (tabs) and Ctrl+T (theme). Every binding has an id, a description and a tooltip, and the
command palette (Ctrl+P) offers each one from any tab, with its tooltip as the help line. Errors
from the worker become notifications; nothing a user types can end the app with a traceback.
`run_app(args)` is what `playground` (no subcommand) calls.
"""
from __future__ import annotations

from argparse import Namespace
from functools import partial
from typing import Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, TabbedContent, TabPane
from textual.widgets._header import HeaderTitle

from llm_playground.playground.attention_view import AttentionView
from llm_playground.playground.chat_side_panel import SpeculateFields, speculate_spec
from llm_playground.playground.chat_view import ChatView
from llm_playground.playground.engine_worker import EngineFactory, EngineWorker
from llm_playground.playground.header_line import fit_header
from llm_playground.playground.help_screen import HelpScreen
from llm_playground.playground.kv_view import KVView
from llm_playground.playground.off_ui_thread import is_live
from llm_playground.playground.messages import (AttentionReady, CacheUpdated, ChatFinished, ChatProgress,
                                                ChoicesUpdated, EngineNotice, LoadFailed, LoadProgress, ModelInfo,
                                                ModelReady, PatternChanged, SpeculateChanged)
from llm_playground.playground.tokenizer_sources import from_bpe
from llm_playground.playground.tokenizer_view import REFERENCES, TokenizerView

DARK, LIGHT = "textual-dark", "textual-light"
# Below these sizes the screen gets the class -narrow / -short and playground.tcss switches to a
# compact layout (80 x 24 shows every label in full); at and above them the layout is the wide one.
NARROW_WIDTH, SHORT_HEIGHT = 120, 30
HEADER_SIDES = 8           # the header's icon, shown on a wide screen (no clock space: playground.tcss)
TAB_FOCUS = {"chat": "#prompt", "tokenizers": "#tok-text", "kv": "#kv-grid", "attention": "#attn-spec"}
# The views, the tab each lives in, in tab order (for the help screen and the palette).
VIEWS = ((ChatView, "chat"), (TokenizerView, "tokenizers"), (KVView, "kv"), (AttentionView, "attention"))
TAB_LABELS = {"chat": "Chat", "tokenizers": "Tokenizers", "kv": "KV cache", "attention": "Attention"}

SHELL_BINDINGS = [
    Binding("f1", "help", "Help", id="app.help", tooltip="Show what each tab does and every key"),
    Binding("f2", "show_tab('chat')", "Chat", id="app.tab.chat", tooltip="Show the Chat tab"),
    Binding("f3", "show_tab('tokenizers')", "Tokenizers", id="app.tab.tokenizers",
            tooltip="Show the Tokenizers tab"),
    Binding("f4", "show_tab('kv')", "KV cache", id="app.tab.kv", tooltip="Show the KV cache tab"),
    Binding("f5", "show_tab('attention')", "Attention", id="app.tab.attention",
            tooltip="Show the Attention tab"),
    Binding("ctrl+t", "toggle_theme", "Dark/light", id="app.theme",
            tooltip="Switch between the dark and the light theme"),
]


def all_bindings() -> list[tuple[Binding, str | None]]:
    """Every binding of the app: (binding, the tab whose view owns it, None for the shell's)."""
    out: list[tuple[Binding, str | None]] = [(b, None) for b in SHELL_BINDINGS]
    for view, tab in VIEWS:
        out += [(b, tab) for b in view.BINDINGS]
    return out


class PlaygroundFooter(Footer):
    """The footer, its tab keys (F2-F5) marked `-tab-key`: a narrow screen leaves them out (the
    tabs are on screen to click, and F1 lists every key) so that the others fit."""

    def compose(self) -> ComposeResult:
        """The stock footer's keys, the tab keys marked `-tab-key`."""
        for widget in super().compose():
            if str(getattr(widget, "action", "")).startswith("show_tab"):      # a FooterKey
                widget.add_class("-tab-key")
            yield widget


class PlaygroundHeader(Header):
    """The stock header, which asks the app to lay its model line out again when its width
    changes (the app's own Resize event does not reach handlers: Textual stops it)."""

    def on_resize(self) -> None:
        """The width changed: the model line's form may change."""
        self.app.call_after_refresh(self.app.show_model_line)


class PlaygroundApp(App):
    """The playground app: runs the engine worker and routes messages between it and the tabs."""
    CSS_PATH = "playground.tcss"
    TITLE = "LLM playground"
    BINDINGS = SHELL_BINDINGS
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
        self._show_title = True
        self.sub_title = f"loading {model_label}…"

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        """Header, loading bar, the four tabs and the footer."""
        yield PlaygroundHeader()
        with Horizontal(id="loading"):
            yield Label(f"Loading {self.model_label}…", id="loading-label")
            yield ProgressBar(total=None, show_eta=False, id="loading-bar")
        with TabbedContent(initial="chat", id="tabs"):
            with TabPane("Chat", id="chat"):
                yield ChatView(id="chat-view")
            with TabPane("Tokenizers", id="tokenizers"):
                yield TokenizerView(references=self.references, id="tokenizer-view")
            with TabPane("KV cache", id="kv"):
                yield KVView(id="kv-view")
            with TabPane("Attention", id="attention"):
                yield AttentionView(id="attention-view")
        yield PlaygroundFooter()

    def on_mount(self) -> None:
        """Set the theme, start the engine worker, focus the prompt."""
        self.theme = DARK
        if not self.cursor_blink:
            for widget in self.query("Input, TextArea"):
                widget.cursor_blink = False
        self.run_engine()
        self.query_one("#prompt").focus()

    @work(thread=True, name="engine", group="engine", exit_on_error=False)
    def run_engine(self) -> None:
        """The engine worker's loop (loads the model, then steps the engine until cancelled)."""
        self.engine_worker.run()

    @property
    def chat(self) -> ChatView:
        """The chat view."""
        return self.query_one(ChatView)

    def _view(self, cls):
        """The view of that class, or None while the app is shutting down (late worker messages:
        the view, or its children, may already be gone)."""
        try:
            view = self.query_one(cls)
        except NoMatches:
            return None
        return view if is_live(view) else None

    # ---- the header --------------------------------------------------------------------------
    def show_model_line(self) -> None:
        """The header's model line: the longest form that fits the header's width now."""
        if self.model_info is None:
            return
        width = self.screen.size.width
        sides = 0 if width < NARROW_WIDTH else HEADER_SIDES
        self._show_title, line = fit_header(self.model_info, self.title, width - sides - 2)
        self.sub_title = line
        for header in self.query(Header):      # the app's name may come or go alone
            header.query_one(HeaderTitle).update(header.format_title())

    def format_title(self, title: str, sub_title: str) -> Content:
        """The app's name only where it fits beside the whole model line (fit_header decides)."""
        if self.model_info is not None and not self._show_title and sub_title:
            return Content(sub_title).stylize("dim")
        return super().format_title(title, sub_title)

    # ---- worker messages, routed to the views ------------------------------------------------
    def on_load_progress(self, msg: LoadProgress) -> None:
        """Show the loading stage and progress."""
        self.query_one("#loading-label", Label).update(f"Loading {self.model_label}: {msg.stage}")
        self.query_one("#loading-bar", ProgressBar).update(total=1.0 if msg.fraction is not None else None,
                                                            progress=msg.fraction or 0.0)

    async def on_model_ready(self, msg: ModelReady) -> None:
        """Hide the loading bar and hand the model's details to every view."""
        info = self.model_info = msg.info
        self.show_model_line()
        # a full bar, not an indeterminate one: a hidden indeterminate bar still redraws itself
        # 15 times a second, UI-thread time taken from the engine for the app's whole life
        self.query_one("#loading-bar", ProgressBar).update(total=1.0, progress=1.0)
        self.query_one("#loading").display = False
        self.query_one(KVView).set_model(info)
        self.query_one(ChatView).set_model(info)
        self.query_one(AttentionView).set_model(info)
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
        """To the chat view."""
        if chat := self._view(ChatView):
            await chat.show_progress(msg)

    async def on_chat_finished(self, msg: ChatFinished) -> None:
        """To the chat view."""
        if chat := self._view(ChatView):
            await chat.show_finished(msg)

    def on_choices_updated(self, msg: ChoicesUpdated) -> None:
        """Pass what the sampler considered to the chat view (its considered panel)."""
        if chat := self._view(ChatView):
            chat.on_choices(msg)

    def on_cache_updated(self, msg: CacheUpdated) -> None:
        """To the KV view; the last message of each live picture, so the pacer counts it."""
        self.engine_worker.pacer.picture_shown()
        if kv := self._view(KVView):
            kv.update_cache(msg)

    def on_engine_notice(self, msg: EngineNotice) -> None:
        """Show the engine's notice as a notification."""
        self.notify(msg.text, severity=msg.severity, timeout=8)

    def on_pattern_changed(self, msg: PatternChanged) -> None:
        """To the Attention view, and say so."""
        if view := self._view(AttentionView):
            view.set_engine_pattern(msg.spec)
        self.notify(f"Attention pattern {msg.spec}: the next requests run with it.")

    def on_attention_ready(self, msg: AttentionReady) -> None:
        """To the Attention view."""
        if view := self._view(AttentionView):
            view.show_weights(msg)

    # ---- view requests, routed to the worker or to another view ------------------------------
    @on(ChatView.Generate)
    def _generate(self, msg: ChatView.Generate) -> None:
        self.engine_worker.chat(msg.ticket, msg.prompt_ids, msg.params)

    @on(ChatView.Cancel)
    def _cancel(self, msg: ChatView.Cancel) -> None:
        self.engine_worker.cancel(msg.ticket)

    @on(ChatView.PromptChanged)
    def _prompt_changed(self, msg: ChatView.PromptChanged) -> None:
        if view := self._view(AttentionView):
            view.set_prompt(msg.prompt_ids)

    @on(KVView.LoadTestRequested)
    def _load_test(self, msg: KVView.LoadTestRequested) -> None:
        if self.model_info is None:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        self.engine_worker.load_test(msg.n)
        self.action_show_tab("kv")

    @on(SpeculateFields.Requested)
    def _speculate(self, msg: SpeculateFields.Requested) -> None:
        started = self.model_info.speculate if self.model_info else "off"
        try:
            self.engine_worker.set_speculate(speculate_spec(msg.on, msg.k_text, started))
        except ValueError as error:
            self.notify(f"{error}", title="Speculation", severity="error")

    def on_speculate_changed(self, msg: SpeculateChanged) -> None:
        """Say what the engine decodes with now."""
        self.notify(f"Speculative decoding {msg.spec}: from the next step on.")

    @on(AttentionView.PatternRequested)
    def _pattern(self, msg: AttentionView.PatternRequested) -> None:
        self.engine_worker.set_pattern(msg.spec)

    @on(AttentionView.WeightsRequested)
    def _weights(self, msg: AttentionView.WeightsRequested) -> None:
        self.engine_worker.attention(msg.prompt_ids, msg.layer, msg.head)

    # ---- the shell's actions -----------------------------------------------------------------
    def action_help(self) -> None:
        """Show the help screen (every key binding)."""
        self.push_screen(HelpScreen(all_bindings()))

    def action_show_tab(self, tab: str) -> None:
        """Switch tabs and move the focus into the new tab (a focused widget left behind in a
        hidden tab would switch the tab back)."""
        self.query_one(TabbedContent).active = tab
        self.set_focus(self.query_one(TAB_FOCUS[tab]))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Move the focus into the newly shown tab unless it is already there. A late event for
        a tab that is no longer the active one is ignored (moving the focus there would switch
        back to it: the palette switches tabs and starts an action at once)."""
        pane = event.pane.id
        if pane != self.query_one(TabbedContent).active:
            return
        focused = self.focused
        if pane in TAB_FOCUS and (focused is None or pane not in {a.id for a in focused.ancestors}):
            self.set_focus(self.query_one(TAB_FOCUS[pane]))

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = LIGHT if self.theme == DARK else DARK

    def _run_in_tab(self, tab: str | None, action: str) -> None:
        """Run a binding's action from the palette: a view's action in its tab, on the view."""
        if tab is None:
            self.run_action(action)
            return
        self.action_show_tab(tab)
        view = self.query_one(next(v for v, t in VIEWS if t == tab))
        self.call_after_refresh(self.run_action, action, view)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The stock palette commands, then one per key binding, described in words."""
        yield from super().get_system_commands(screen)
        for b, tab in all_bindings():
            where = "" if tab is None else f" ({TAB_LABELS[tab]} tab)"
            yield SystemCommand(b.description, f"{b.tooltip}{where} · {b.key}",
                                partial(self._run_in_tab, tab, b.action))


def run_app(args: Namespace) -> None:
    """Start the playground with the engine the flags describe (called by playground/cli.py)."""
    from llm_playground.playground.engine_factory import real_factory
    from llm_playground.playground.tokenizer_sources import start_process_helpers
    label = getattr(args, "model", None) or "the default model"
    factory = real_factory(args)  # a bad flag value fails here, one line, before anything starts
    start_process_helpers()      # before Textual replaces sys.stderr (tokenizer training workers)
    PlaygroundApp(factory, model_label=str(label)).run()
