"""The Tokenizers tab: one text, segmented by several tokenizers side by side.

Each panel shows the text as coloured token spans (neighbours always in different colours,
whitespace visible, split characters grouped: playground/token_spans.py) with its token count,
byte count and bytes per token. Clicking a span shows its id(s), bytes and merge tree below. The
toolbar adds a SentencePiece `.model` file (Ctrl+O), or trains a new BPE tokenizer on corpus
files (Ctrl+N) in a thread worker (progress bar), which then joins the comparison. The reference
tokenizers (cl100k_base, o200k_base) load in thread workers the first time the tab is shown, not
at start-up: loading them is seconds of CPU that would slow the first answer in the Chat tab.
The view owns its key bindings and workers; it needs nothing from the app but notifications.

Counting is the tokenizers' own: `encode_ordinary` for our BPE, `encode` for SentencePiece.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, ProgressBar, Static, TextArea

from llm_playground.playground.messages import (TokenizerLoaded, TokenizerUnavailable, TrainFailed,
                                                TrainFinished, TrainProgress)
from llm_playground.playground.token_spans import Span, group_spans, render_spans
from llm_playground.playground.tokenizer_sources import (TokenizerEntry, expand_corpus, from_bpe,
                                                         from_sentencepiece, load_reference, train)

SAMPLE_TEXT = ("Hello world! Tokenizers split text into pieces: "
               "naïve café, 東京, 🙂 and    spaces.\n    def f(x): return x ** 2")
REFERENCES = ("cl100k_base", "o200k_base")


def format_tree(tree, id_to_bytes) -> str:
    """bpe merge tree (leaf = id; node = (id, left, right, ...)) -> "((t h) e)" with the pieces'
    text, spaces shown as ·."""
    if isinstance(tree, int):
        text = id_to_bytes(tree).decode("utf-8", errors="backslashreplace")
        return text.replace(" ", "·").replace("\n", "↵") or "''"
    if isinstance(tree, (tuple, list)) and len(tree) > 1:
        return "(" + " ".join(format_tree(t, id_to_bytes) for t in tree[1:]) + ")"
    return str(tree)


class TokenizerPanel(Vertical):
    """One tokenizer's segmentation of the text."""

    @dataclass
    class Picked(Message):
        """A span was clicked in `panel`: its index."""
        panel: "TokenizerPanel"
        index: int

    def __init__(self, entry: TokenizerEntry, **kwargs) -> None:
        super().__init__(classes="tok-panel", **kwargs)
        self.entry = entry
        self.ids: list[int] = []
        self.spans: list[Span] = []
        self.selected: int | None = None

    def compose(self) -> ComposeResult:
        """A title line and the token spans."""
        yield Label("", classes="tok-title")
        yield Static("", classes="tok-spans")

    def segment(self, text: str) -> None:
        """Encode `text`; show its spans, token count, byte count and bytes per token."""
        self.ids = list(self.entry.encode(text))
        self.spans = group_spans(self.ids, self.entry.id_to_bytes)
        self.selected = None
        nbytes = len(text.encode("utf-8"))
        per = nbytes / len(self.ids) if self.ids else 0.0
        self.query_one(".tok-title", Label).update(
            f"[b]{escape(self.entry.name)}[/] ({self.entry.kind}): [b]{len(self.ids)}[/] tokens, "
            f"{nbytes} bytes, {per:.2f} bytes/token")
        self._draw()

    def _draw(self) -> None:
        self.query_one(".tok-spans", Static).update(render_spans(self.spans, self.selected, "pick"))

    def action_pick(self, index: int) -> None:
        """Select span `index` and post Picked."""
        self.selected = index
        self._draw()
        self.post_message(self.Picked(self, index))


class TokenizerView(Vertical):
    """The Tokenizers tab: a text box, a toolbar, one panel per tokenizer, the picked token."""
    BINDINGS = [
        Binding("ctrl+n", "train", "Train tokenizer", id="tokenizers.train",
                tooltip="Train a BPE tokenizer on the corpus files in the box and add it to the comparison"),
        Binding("ctrl+o", "add_sentencepiece", "Add SentencePiece model", id="tokenizers.add_spm",
                show=False, tooltip="Add the SentencePiece .model file named in the box to the comparison"),
    ]

    def __init__(self, references: Iterable[str] = REFERENCES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[TokenizerEntry] = []
        self.references = tuple(references)
        self._references_started = False
        self._pending = None

    def compose(self) -> ComposeResult:
        """The text box, the training and SentencePiece toolbar, the panels and the detail line."""
        yield TextArea(SAMPLE_TEXT, id="tok-text", soft_wrap=True)
        with Horizontal(classes="toolbar"):
            files = Input(placeholder="corpus files or globs", id="tok-train-files")
            files.tooltip = "Corpus files or glob patterns, comma separated (notes/*.md, book.txt)"
            yield files
            yield Input("1000", id="tok-train-vocab", type="integer")
            yield Button("Train", id="tok-train")
            yield ProgressBar(total=1.0, show_eta=False, id="tok-train-progress")
            yield Input(placeholder="SentencePiece .model path", id="tok-spm-path")
            yield Button("Add .model", id="tok-spm-add")
        with VerticalScroll(id="tok-scroll"):
            yield Grid(id="tok-panels")
        yield Static("Click a token to see its id, bytes and merges.", id="tok-detail")

    def on_show(self) -> None:
        """The first time the tab is shown: start loading the reference tokenizers."""
        if not self._references_started:
            self._references_started = True
            for name in self.references:
                self._load_reference(name)

    @work(thread=True, group="references", exit_on_error=False)
    def _load_reference(self, name: str) -> None:
        try:
            self.post_message(TokenizerLoaded(load_reference(name)))
        except Exception as error:
            from llm_playground.playground.engine_worker import one_line
            self.post_message(TokenizerUnavailable(name, one_line(error)))

    async def on_tokenizer_loaded(self, msg: TokenizerLoaded) -> None:
        """A reference tokenizer loaded: it joins the comparison."""
        await self.add_entry(msg.entry)

    def on_tokenizer_unavailable(self, msg: TokenizerUnavailable) -> None:
        """Warn that a reference tokenizer is not available."""
        self.notify(f"{msg.name} is not available: {msg.error}", severity="warning")

    def text(self) -> str:
        """The text in the box."""
        return self.query_one("#tok-text", TextArea).text

    async def add_entry(self, entry: TokenizerEntry) -> TokenizerPanel:
        """Add (or replace, by name) a tokenizer and segment the current text with it."""
        for panel in self.query(TokenizerPanel):
            if panel.entry.name == entry.name:
                await panel.remove()
        self.entries = [e for e in self.entries if e.name != entry.name] + [entry]
        panel = TokenizerPanel(entry)
        await self.query_one("#tok-panels", Grid).mount(panel)
        self._segment(panel)
        return panel

    def _segment(self, panel: TokenizerPanel) -> None:
        try:
            panel.segment(self.text())
        except Exception as error:
            panel.query_one(".tok-title", Label).update(
                f"[b]{escape(panel.entry.name)}[/]: cannot encode this text ({escape(str(error))})")

    def resegment(self) -> None:
        """Segment the current text again in every panel."""
        for panel in self.query(TokenizerPanel):
            self._segment(panel)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        """Resegment 0.15 s after the last keystroke."""
        if self._pending is not None:
            self._pending.stop()
        self._pending = self.set_timer(0.15, self.resegment)   # debounce typing

    def on_tokenizer_panel_picked(self, event: TokenizerPanel.Picked) -> None:
        """Show the picked span's ids, bytes and merge trees."""
        span = event.panel.spans[event.index]
        entry = event.panel.entry
        lines = [f"[b]{escape(entry.name)}[/] span {event.index}: {escape(repr(span.text))}"]
        for tid in span.ids:
            raw = entry.id_to_bytes(tid)
            line = f"  id [b]{tid}[/]  bytes {escape(repr(raw))}  hex {raw.hex(' ')}"
            if entry.merge_tree is not None:
                try:
                    line += f"  merges {escape(format_tree(entry.merge_tree(tid), entry.id_to_bytes))}"
                except Exception:
                    pass
            lines.append(line)
        if len(span.ids) > 1:
            lines.append("  (these tokens together make whole characters; each alone is part of one)")
        self.query_one("#tok-detail", Static).update("\n".join(lines))

    # ---- SentencePiece and training ----------------------------------------------------------
    async def action_add_sentencepiece(self) -> None:
        """Add the SentencePiece model at the path in the box (a notice when it cannot be read)."""
        path = self.query_one("#tok-spm-path", Input).value
        if not path.strip():
            self.query_one("#tok-spm-path", Input).focus()
            self.notify("Type the path of a SentencePiece .model file in the box first.",
                        title="SentencePiece", severity="warning")
            return
        try:
            entry = from_sentencepiece(path)
        except ValueError as error:
            self.notify(str(error), title="SentencePiece", severity="error")
            return
        await self.add_entry(entry)

    def action_train(self) -> None:
        """Train a BPE on the listed corpus files with the given vocab size, in a thread worker;
        with no files listed, the focus goes to the corpus box."""
        box = self.query_one("#tok-train-files", Input)
        if not box.value.strip():
            box.focus()
            self.notify("Type corpus files or globs in the box first (e.g. notes/*.md, book.txt).",
                        title="Train", severity="warning")
            return
        vocab_box = self.query_one("#tok-train-vocab", Input)
        try:
            files = expand_corpus(box.value)
        except ValueError as error:
            box.focus()                    # the box to fix has the focus
            self.notify(str(error), title="Train", severity="error")
            return
        try:
            vocab = int(vocab_box.value or 0)
        except ValueError:
            vocab_box.focus()
            self.notify("the vocab size must be a whole number", title="Train", severity="error")
            return
        self.query_one("#tok-train-progress", ProgressBar).update(progress=0.0)
        self.notify(f"Training a {vocab}-token BPE on {len(files)} file(s)...")
        self._train(files, vocab)

    @work(thread=True, exclusive=True, group="train", name="train-tokenizer", exit_on_error=False)
    def _train(self, files: list[str], vocab: int) -> None:
        start = time.perf_counter()

        def progress(*args, **kwargs) -> None:
            """Post a trainer progress call as TrainProgress (a fraction when it gives one)."""
            nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            done, total = kwargs.get("done", nums[0] if nums else None), kwargs.get("total", nums[1] if len(nums) > 1 else None)
            frac = (done / total) if (done is not None and total) else (done if isinstance(done, float) else None)
            self.post_message(TrainProgress(frac, " ".join(str(a) for a in args)))

        try:
            tok = train(files, vocab, progress)
        except Exception as error:
            self.post_message(TrainFailed(f"{type(error).__name__}: {error}"))
            return
        self.post_message(TrainFinished(tok, f"trained-{vocab}", time.perf_counter() - start))

    def on_train_progress(self, msg: TrainProgress) -> None:
        """Move the training progress bar."""
        if msg.fraction is not None:
            self.query_one("#tok-train-progress", ProgressBar).update(progress=msg.fraction)

    async def on_train_finished(self, msg: TrainFinished) -> None:
        """Add the trained tokenizer to the comparison and say so."""
        self.query_one("#tok-train-progress", ProgressBar).update(progress=1.0)
        await self.add_entry(from_bpe(msg.tokenizer, msg.name, "trained"))
        self.notify(f"Trained {msg.name} in {msg.seconds:.1f} s; it is in the comparison.")

    def on_train_failed(self, msg: TrainFailed) -> None:
        """Say why training failed."""
        self.notify(msg.error, title="Training failed", severity="error")

    @on(Button.Pressed, "#tok-train")
    def _train_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_train()

    @on(Button.Pressed, "#tok-spm-add")
    async def _spm_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await self.action_add_sentencepiece()
