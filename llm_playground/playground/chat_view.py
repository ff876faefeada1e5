"""The Chat tab: a multi-turn conversation with streamed Markdown, sampling settings, a live strip.

The view keeps the `Conversation` (playground/chat_session.py), turns it into prompt ids with the
model's chat template and hands them to the engine worker; the worker's ChatProgress /
ChatFinished messages (routed here by the app) stream into the last assistant message through
`Markdown.get_stream`, and one full `Markdown.update` happens when the answer is complete. A
cancelled or failed answer keeps the text produced so far. Optional token colouring shows where
the token boundaries fall (playground/token_spans.py).

It does not call the engine: everything goes through `app.engine_worker` (a queue).
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Markdown, Static, Switch, TextArea

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.chat_session import Conversation, Turn
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.considered_panel import CANDIDATES_PER_STAGE, ConsideredPanel
from llm_playground.playground.messages import ChatFinished, ChatProgress, ChoicesUpdated
from llm_playground.playground.stats_strip import StatsStrip
from llm_playground.playground.token_spans import group_spans, render_spans

if TYPE_CHECKING:
    from textual.widgets._markdown import MarkdownStream

SAMPLING_FIELDS = (  # (id, label, default, type)
    ("temperature", "temperature", "0.7", "number"),
    ("top_p", "top-p", "0.9", "number"),
    ("top_k", "top-k", "40", "integer"),
    ("max_tokens", "max tokens", "256", "integer"),
    ("seed", "seed", "0", "integer"),
    ("n", "n samples", "1", "integer"),
)


class UserMessage(Static):
    """One user turn in the chat log."""
    def __init__(self, text: str) -> None:
        super().__init__(f"[b]you[/b]  {escape(text)}", classes="user-message")


class AssistantMessage(Vertical):
    """One answer (or n parallel samples), streamed."""

    def __init__(self, n: int) -> None:
        super().__init__(classes="assistant-message")
        self.n = n
        self.texts = [""] * n
        self.ids: list[tuple[int, ...]] = [()] * n
        self._streams: list[MarkdownStream | None] = [None] * n
        self.status = "streaming"

    def compose(self) -> ComposeResult:
        """A role label, a Markdown answer and a token-span view per sample, then a status line."""
        for i in range(self.n):
            label = "assistant" if self.n == 1 else f"assistant · sample {i + 1}/{self.n}"
            yield Label(f"[b]{label}[/b]", classes="role")
            yield Markdown("", id=f"md-{i}", classes="answer")
            yield Static("", id=f"tok-{i}", classes="answer-tokens")
        yield Label("", classes="answer-status")

    async def stream(self, texts: tuple[str, ...], ids: tuple[tuple[int, ...], ...], tokenizer,
                     colours: bool) -> None:
        """Append each sample's new text to its Markdown stream and keep its ids."""
        for i, text in enumerate(texts[: self.n]):
            md = self.query_one(f"#md-{i}", Markdown)
            delta = text[len(self.texts[i]):]
            if delta:
                if self._streams[i] is None:
                    self._streams[i] = Markdown.get_stream(md)
                await self._streams[i].write(delta)
            self.texts[i] = text
            self.ids[i] = ids[i] if i < len(ids) else ()
        self._show_tokens(tokenizer, colours)

    async def finish(self, msg: ChatFinished, tokenizer, colours: bool) -> None:
        """Stop the streams, show the final texts in full, and say what ended the answer."""
        for i in range(self.n):
            if self._streams[i] is not None:
                await self._streams[i].stop()
            self.texts[i] = msg.texts[i] if i < len(msg.texts) else self.texts[i]
            self.ids[i] = msg.token_ids[i] if i < len(msg.token_ids) else self.ids[i]
            await self.query_one(f"#md-{i}", Markdown).update(self.texts[i])  # one full update
        reasons = [FinishReason(r) for r in msg.finish_reasons if r]
        aborted = FinishReason.ABORTED in reasons
        self.status = "abort" if aborted else ("error" if msg.error else "done")
        if aborted:
            note = FinishReason.ABORTED.describe()
        elif msg.error:
            note = f"error: {msg.error}"
        else:      # say what ended an answer that the model did not end itself
            ends = sorted({r for r in reasons if r.is_length}, key=list(FinishReason).index)
            note = "; ".join(r.describe() for r in ends)
        self.query_one(".answer-status", Label).update(escape(note))
        self._show_tokens(tokenizer, colours)

    def _show_tokens(self, tokenizer, colours: bool) -> None:
        for i in range(self.n):
            md = self.query_one(f"#md-{i}", Markdown)
            tok = self.query_one(f"#tok-{i}", Static)
            md.display = not colours
            tok.display = colours
            if colours and tokenizer is not None:
                tok.update(render_spans(group_spans(self.ids[i], tokenizer.id_to_bytes)))


class ChatView(Horizontal):
    """Conversation on the left, settings on the right."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conversation = Conversation()
        self.ticket: int | None = None          # the generation in flight
        self._next_ticket = 0
        self._answer: AssistantMessage | None = None
        self.last_prompt_ids: list[int] = []
        self._max_tokens = 0
        self.token_colours = False
        self.colour_mode = ColourMode.OFF               # F7: off / boundaries / speculation / probability
        self.model_system_prompt: str | None = None   # the template's default, shown until edited
        self.load_error: str | None = None              # why no model is loaded, once loading failed

    def compose(self) -> ComposeResult:
        """The chat log, stats strip and prompt; the side panel with system prompt and settings."""
        with Vertical(id="chat-main"):
            yield VerticalScroll(id="chat-log")
            yield ConsideredPanel(id="chat-considered")
            yield StatsStrip(id="chat-stats")
            yield Input(placeholder="Type a message (Enter sends, Esc stops)", id="prompt")
        with VerticalScroll(id="chat-side"):
            yield Label("System prompt")
            yield TextArea("", id="system-prompt", soft_wrap=True,
                           placeholder="the model's default (loading…)")
            for fid, label, default, kind in SAMPLING_FIELDS:
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(default, id=f"param-{fid}", type=kind)
            with Horizontal(classes="field"):
                yield Label("token colours")
                yield Switch(False, id="token-colours")
            with Horizontal(id="chat-buttons"):
                for label, bid, tip in (("Regen", "regenerate", "Regenerate the last answer (ctrl+r)"),
                                        ("Clear", "clear", "Clear the conversation (ctrl+l)"),
                                        ("Copy", "copy", "Copy the last answer (f6)")):
                    button = Button(label, id=bid)
                    button.tooltip = tip
                    yield button

    # ---- settings ----------------------------------------------------------------------------
    def set_model(self, chat_template: str | None) -> None:
        """Show the model's own default system prompt, unless the user has typed one."""
        from llm_playground.model.engine.chat_template import default_system_prompt
        area = self.query_one("#system-prompt", TextArea)
        unedited = area.text in ("", self.model_system_prompt or "")
        self.model_system_prompt = default_system_prompt(chat_template)
        area.placeholder = "none (this model's template has no default)"
        if unedited:
            area.text = self.model_system_prompt or ""

    def set_model_failed(self, why: str) -> None:
        """No model will come: say so where the chat would otherwise say it is loading."""
        self.load_error = why
        self.query_one("#system-prompt", TextArea).placeholder = "no model loaded"

    def system_prompt(self) -> str | None:
        """What the user set; None when it is the model's default, which the template writes."""
        text = self.query_one("#system-prompt", TextArea).text
        return None if self.model_system_prompt is not None and text == self.model_system_prompt else text

    def sampling_params(self) -> SamplingParams:
        """Read the side panel; raises ValueError with a readable message on bad values."""
        raw = {fid: self.query_one(f"#param-{fid}", Input).value.strip() for fid, *_ in SAMPLING_FIELDS}
        try:
            return SamplingParams(temperature=float(raw["temperature"] or 0), top_p=float(raw["top_p"] or 1),
                                  top_k=int(raw["top_k"] or 0), max_tokens=int(raw["max_tokens"] or 256),
                                  seed=int(raw["seed"]) if raw["seed"] else None, n=int(raw["n"] or 1))
        except ValueError as error:
            raise ValueError(f"sampling settings: {error}") from None

    # ---- actions (the app's bindings call these) ---------------------------------------------
    async def send(self, text: str) -> None:
        """Add a user turn and start its answer (a notice instead while busy or with no model)."""
        text = text.strip()
        if not text:
            return
        if self.ticket is not None:
            self.app.notify("An answer is still streaming: wait, or press Esc to stop it.", severity="warning")
            return
        if self.app.model_info is None:
            if self.load_error is not None:
                self.app.notify("No model is loaded (restart with --model PATH); your message is kept "
                                "in the box.", severity="warning")
            else:
                self.app.notify("The model is still loading; your message is kept in the box.",
                                severity="warning")
            return
        self.query_one("#prompt", Input).value = ""
        await self.query_one("#chat-log").mount(UserMessage(text))
        self.conversation.turns.append(Turn("user", text))
        if not await self._start():
            self.conversation.turns.pop()      # not sent: the next turn must not carry it

    async def regenerate(self) -> None:
        """Drop the last answer and generate it again (seed moved on by one when sampling)."""
        if self.ticket is not None or self.conversation.last_user_index() is None:
            return
        self._next_seed()
        self.conversation.drop_after_last_user()
        answers = self.query(AssistantMessage)
        if answers and answers.last() is self.query_one("#chat-log").children[-1]:
            await answers.last().remove()
        await self._start()

    async def clear(self) -> None:
        """Stop any answer and empty the conversation and the log."""
        self.cancel()
        self.conversation.turns.clear()
        self.query_one(ConsideredPanel).clear()
        await self.query_one("#chat-log").remove_children()

    def cancel(self) -> bool:
        """Ask the worker to stop the answer in flight; False when there is none."""
        if self.ticket is None:
            return False
        self.app.engine_worker.cancel(self.ticket)
        return True

    def last_reply(self) -> str:
        """The first sample's text of the last answer, or ""."""
        answers = self.query(AssistantMessage)
        return answers.last().texts[0] if answers else ""

    def _next_seed(self) -> None:
        """Regenerate draws a new sample: with a fixed seed and temperature > 0 the same seed
        would give the same answer again, so the seed field moves on by one (visible, and
        reproducible). Greedy decoding (temperature 0) does not depend on the seed."""
        try:
            params = self.sampling_params()
        except ValueError:
            return                       # _start reports the bad field
        if params.temperature > 0 and params.seed is not None:
            self.query_one("#param-seed", Input).value = str(params.seed + 1)

    def set_token_colours(self, on: bool) -> None:
        """Show every answer as coloured token spans (on) or as Markdown (off)."""
        self.token_colours = on
        self.query_one("#token-colours", Switch).value = on
        tok = self.app.model_info.tokenizer if self.app.model_info else None
        for answer in self.query(AssistantMessage):
            answer._show_tokens(tok, on)

    async def _start(self) -> bool:
        """Send the conversation to the engine; False (and a notification) when it cannot be."""
        info = self.app.model_info
        self.conversation.system_prompt = self.system_prompt()
        try:
            params = self.sampling_params()
            record = self.colour_mode is ColourMode.PROBABILITY    # the considered panel's data
            if record:
                params = replace(params, logprobs=CANDIDATES_PER_STAGE)
            ids = self.conversation.prompt_ids(info.tokenizer, info.chat_template)
        except Exception as error:
            self.app.notify(f"{error}", title="Not sent", severity="error")
            return False
        self._next_ticket += 1
        self.ticket = self._next_ticket
        self.last_prompt_ids = ids
        self._max_tokens = params.max_tokens
        self._answer = AssistantMessage(params.n)
        self.query_one(ConsideredPanel).begin_answer(self.ticket, record)
        log = self.query_one("#chat-log", VerticalScroll)
        await log.mount(self._answer)
        log.scroll_end(animate=False)
        self.app.engine_worker.chat(self.ticket, ids, params)
        return True

    # ---- worker messages (routed by the app) -------------------------------------------------
    async def on_progress(self, msg: ChatProgress) -> None:
        """Stream the in-flight answer's new text and update the stats strip."""
        if msg.ticket != self.ticket or self._answer is None:
            return
        await self._answer.stream(msg.texts, msg.token_ids, self.app.model_info.tokenizer, self.token_colours)
        self.query_one(StatsStrip).show(msg.stats)
        self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    async def on_finished(self, msg: ChatFinished) -> None:
        """Finish the answer, record it in the conversation, notify of errors and early stops."""
        if msg.ticket != self.ticket or self._answer is None:
            return
        answer, self._answer = self._answer, None
        try:
            await answer.finish(msg, self.app.model_info.tokenizer, self.token_colours)
        finally:
            self.ticket = None
        self.query_one(StatsStrip).show(msg.stats)
        produced = msg.texts[0] if msg.texts else ""
        if produced:
            self.conversation.turns.append(Turn("assistant", produced))
        elif msg.error:
            self.conversation.turns.pop()   # never sent: the next turn must not carry it
        if msg.error:
            self.app.notify(msg.error, title="Generation stopped", severity="error", timeout=8)
        elif FinishReason.KV_CACHE_FULL in msg.finish_reasons:
            self.app.notify("The answer stopped early: the KV cache is full. Clear the chat "
                            "(ctrl+l) or restart with a larger --kv-blocks.",
                            title="Out of KV cache", severity="warning", timeout=8)
        elif FinishReason.CONTEXT_FULL in msg.finish_reasons:
            self.app.notify("The answer stopped early: the model's context is full. Clear the chat "
                            "(ctrl+l) to start a new conversation.",
                            title="Context full", severity="warning", timeout=8)
        self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    # ---- widget events -----------------------------------------------------------------------
    async def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the prompt sends the message."""
        if event.input.id == "prompt":
            event.stop()
            await self.send(event.value)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        """Regen, Clear and Copy buttons."""
        event.stop()
        if event.button.id == "regenerate":
            await self.regenerate()
        elif event.button.id == "clear":
            await self.clear()
        elif event.button.id == "copy":
            self.app.action_copy_reply()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        """The token-colours switch turns colouring on or off."""
        if event.switch.id == "token-colours" and event.value != self.token_colours:
            self.set_colour_mode(ColourMode.BOUNDARIES if event.value else ColourMode.OFF)

    # ---- token colour modes (F7) and what the model considered (playground/considered_panel.py)
    def cycle_colour_mode(self) -> ColourMode:
        """F7: off -> boundaries -> speculation -> probability -> off; returns the new mode."""
        self.set_colour_mode(self.colour_mode.next())
        return self.colour_mode

    def set_colour_mode(self, mode: ColourMode) -> None:
        """Boundaries colour the answers' token spans in the log; probability and speculation
        show the considered panel (speculation only says it has no data yet)."""
        self.colour_mode = mode
        self.set_token_colours(mode is ColourMode.BOUNDARIES)
        self.query_one(ConsideredPanel).show_mode(mode)

    def on_choices(self, msg: ChoicesUpdated) -> None:
        """The worker's ChoicesUpdated (routed by the app) for the latest answer started."""
        if msg.ticket == self._next_ticket:
            self.query_one(ConsideredPanel).update_choices(msg.ticket, msg.choices,
                                                           self.app.model_info.tokenizer)
