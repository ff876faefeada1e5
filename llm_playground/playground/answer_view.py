"""One assistant answer in the chat log: n samples streamed live, then shown as Markdown.

What streaming costs the UI thread is the point of this module (the UI must not slow the engine:
the two share the GIL and, on a small CPU, the cores). A Textual layout of the whole screen costs
about 10 ms there, so a streaming answer asks for one only when its height changes:
- finished Markdown blocks (the text up to the last blank line outside a code fence) are
  appended to a `Markdown` widget: one layout per block;
- the open block is plain text in a `Static` that asks for a layout only when its wrapped height
  changes, otherwise a repaint of its own lines;
- when the answer ends, one full `Markdown.update` shows it as the model wrote it.
While it streams, the open block keeps a few spare lines below it (STREAM_RESERVE_LINES), so
that a new line of text rarely changes the answer's height. With token colours on (F7's `boundaries`), each sample is drawn as coloured token spans instead
(token_spans.py), under the same height rule; in `probability` mode, an answer whose choices were
recorded (`set_choices`, what the sampler considered) is drawn token by token in the colour of
each token's probability, on the scale of the considered panel's strip (probability_strip.py).
A stop token (end of sequence) is not reply text: a small end marker stands for it.

It does not talk to the engine; the chat view (chat_view.py) feeds it what the worker posted.
"""
from __future__ import annotations

from typing import Any, Sequence

from rich.markup import escape
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.probability_strip import probability_text
from llm_playground.playground.repaint import release, update_in_place
from llm_playground.playground.token_spans import group_spans, render_spans

END_MARKER = "⟨end⟩"          # stands for the stop token that ended a sample
END_STYLE = Style(dim=True, italic=True)
# Spare lines a streaming answer keeps under its open block (repaint.update_in_place): a screen
# layout about every 4th line of text instead of every line; gone when the answer ends.
STREAM_RESERVE_LINES = 3
FENCE = "```"


def split_open_block(text: str) -> tuple[str, str]:
    """(finished blocks, open block): the cut is after the last blank line that is not inside
    a fenced code block, so the head parses as Markdown the same way now and later."""
    cut = text.rfind("\n\n")
    while cut >= 0:
        head = text[:cut + 2]
        fences = sum(1 for line in head.splitlines() if line.lstrip().startswith(FENCE))
        if fences % 2 == 0:
            return head, text[cut + 2:]
        cut = text.rfind("\n\n", 0, cut)
    return "", text


def text_ids(ids: Sequence[int], reason: Any) -> tuple[Sequence[int], bool]:
    """(the ids that are reply text, whether a stop token followed them): a sample that ended
    with END_OF_SEQUENCE ends with the stop id, which the engine never turns into text."""
    if reason is not None and FinishReason(reason) is FinishReason.END_OF_SEQUENCE and ids:
        return ids[:-1], True
    return ids, False


def describe_end(reasons: Sequence[Any], error: str | None, max_tokens: int | None) -> str:
    """The status line under an answer: what ended it, when that was not the model itself
    (for n samples that ended differently, per sample)."""
    if error:
        return f"error: {error}"
    typed = [FinishReason(r) if r is not None else None for r in reasons]
    if FinishReason.ABORTED in typed:
        return FinishReason.ABORTED.describe()

    def one(r: FinishReason | None) -> str:
        return r.describe(max_tokens) if r is not None and r.is_length else ""

    notes = [one(r) for r in typed]
    if len(set(notes)) <= 1:
        return notes[0] if notes else ""
    return "; ".join(f"sample {i + 1}: {note or FinishReason.END_OF_SEQUENCE.describe()}"
                     for i, note in enumerate(notes))


class AssistantMessage(Vertical):
    """One answer (or n parallel samples), streamed."""

    def __init__(self, n: int, max_tokens: int | None = None) -> None:
        super().__init__(classes="assistant-message")
        self.n = n
        self.max_tokens = max_tokens
        self.texts = [""] * n
        self.ids: list[tuple[int, ...]] = [()] * n
        self.reasons: list[Any] = [None] * n
        self._shown_head = [""] * n        # finished blocks already appended to each Markdown
        self.choices: tuple[tuple[Any, ...], ...] = ()   # TokenChoices per sample, when recorded
        self.status = "streaming"

    def compose(self) -> ComposeResult:
        """A role label, a Markdown answer, its open block and token spans per sample; a status line."""
        for i in range(self.n):
            label = "assistant" if self.n == 1 else f"assistant · sample {i + 1}/{self.n}"
            yield Label(f"[b]{label}[/b]", classes="role")
            yield Markdown("", id=f"md-{i}", classes="answer")
            yield Static("", id=f"tail-{i}", classes="answer-tail", markup=False)
            yield Static("", id=f"tok-{i}", classes="answer-tokens")
        yield Label("", classes="answer-status")

    async def stream(self, texts: tuple[str, ...], ids: tuple[tuple[int, ...], ...],
                     reasons: tuple[Any, ...], tokenizer: Any, mode: ColourMode) -> bool:
        """Show each sample's text so far: finished blocks as Markdown, the open one as text.
        Returns whether the answer may have grown taller (a layout was asked for)."""
        grew = False
        for i, text in enumerate(texts[: self.n]):
            self.ids[i] = ids[i] if i < len(ids) else ()
            self.reasons[i] = reasons[i] if i < len(reasons) else None
            if text == self.texts[i]:
                continue
            self.texts[i] = text
            head, tail = split_open_block(text)
            if len(head) > len(self._shown_head[i]) and head.startswith(self._shown_head[i]):
                await self.query_one(f"#md-{i}", Markdown).append(head[len(self._shown_head[i]):])
                self._shown_head[i], grew = head, True
            elif not head.startswith(self._shown_head[i]):     # never for appended text
                await self.query_one(f"#md-{i}", Markdown).update(head)
                self._shown_head[i], grew = head, True
        if self._by_probability(mode):
            return grew              # drawn when the step's choices come (set_choices)
        return self.show_tokens(tokenizer, mode) or grew

    async def finish(self, texts: tuple[str, ...], ids: tuple[tuple[int, ...], ...],
                     reasons: tuple[Any, ...], error: str | None, tokenizer: Any,
                     mode: ColourMode) -> None:
        """Show the final texts in full as Markdown, and say what ended the answer."""
        for i in range(self.n):
            self.texts[i] = texts[i] if i < len(texts) else self.texts[i]
            self.ids[i] = ids[i] if i < len(ids) else self.ids[i]
            self.reasons[i] = reasons[i] if i < len(reasons) else None
            self.query_one(f"#tail-{i}", Static).update("")
            self.query_one(f"#tail-{i}", Static).display = False
            release(self.query_one(f"#tail-{i}", Static))
            release(self.query_one(f"#tok-{i}", Static))
            await self.query_one(f"#md-{i}", Markdown).update(self.texts[i])  # one full update
            self._shown_head[i] = self.texts[i]
        typed = [FinishReason(r) for r in self.reasons if r]
        self.status = ("abort" if FinishReason.ABORTED in typed else "error" if error else "done")
        self.query_one(".answer-status", Label).update(escape(describe_end(self.reasons, error, self.max_tokens)))
        self.show_tokens(tokenizer, mode)

    def set_choices(self, choices: Any, tokenizer: Any, mode: ColourMode) -> bool:
        """What the sampler considered for each sample so far (the worker's ChoicesUpdated);
        redrawn now in `probability` mode. Returns whether a layout was asked for."""
        self.choices = tuple(tuple(c) for c in choices)
        return self.show_tokens(tokenizer, mode) if self._by_probability(mode) else False

    def _by_probability(self, mode: ColourMode) -> bool:
        """Probability colours for this answer: the mode asks and its choices were recorded."""
        return mode is ColourMode.PROBABILITY and any(self.choices)

    def show_tokens(self, tokenizer: Any, mode: ColourMode) -> bool:
        """Show every sample as coloured token spans (`boundaries`), by probability
        (`probability`, when this answer's choices were recorded) or as Markdown (otherwise);
        returns whether a layout was asked for."""
        streaming = self.status == "streaming"
        reserve = STREAM_RESERVE_LINES if streaming else 0
        by_p = self._by_probability(mode) and tokenizer is not None
        colours = mode is ColourMode.BOUNDARIES or by_p
        grew = False
        for i in range(self.n):
            md = self.query_one(f"#md-{i}", Markdown)
            tail = self.query_one(f"#tail-{i}", Static)
            tok = self.query_one(f"#tok-{i}", Static)
            md.display = not colours
            tail.display = streaming and not colours
            tok.display = colours
            if by_p:
                mine = self.choices[i] if i < len(self.choices) else ()
                grew |= update_in_place(tok, probability_text(mine, tokenizer.id_to_bytes,
                                                              tokenizer.is_special), reserve=reserve)
            elif colours and tokenizer is not None:
                grew |= update_in_place(tok, self.token_text(i, tokenizer), reserve=reserve)
            elif streaming and not colours:
                grew |= update_in_place(tail, self.texts[i][len(self._shown_head[i]):], reserve=reserve)
        return grew

    def token_text(self, i: int, tokenizer: Any) -> Text:
        """Sample i as coloured token spans; a stop token as the end marker, not as text."""
        ids, stopped = text_ids(self.ids[i], self.reasons[i])
        out = render_spans(group_spans(ids, tokenizer.id_to_bytes))
        if stopped:
            out.append(" " + END_MARKER, END_STYLE)
        return out
