"""The Chat tab: a multi-turn conversation, streamed answers, sampling settings, a live strip.

The view keeps the `Conversation` (playground/chat_session.py) and turns it into prompt ids with
the model's chat template. It owns its key bindings (Esc, Ctrl+R, Ctrl+L, F6, F7) and talks to
the engine only through messages posted upward: `Generate` and `Cancel` (the app hands them to
the engine worker) and `PromptChanged` (the app tells the Attention tab what F10 covers). The
worker's ChatProgress / ChatFinished, routed here by the app, stream into the last assistant
message (playground/answer_view.py: cheap live updates, one full Markdown update at the end). A
cancelled or failed answer keeps the text produced so far. Token colouring (F7, `token_colours`,
view state) shows where the token boundaries fall, or (F7's probability mode, `log_mode`) each
token's probability in the log as in the considered panel; its handler is one small action. The
side panel's widgets and the reading of its sampling fields: playground/chat_side_panel.py.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Button, Input, Static, Switch, TextArea

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.answer_view import AssistantMessage
from llm_playground.playground.chat_colour_modes import ChatColourModes
from llm_playground.playground.chat_session import Conversation, Turn
from llm_playground.playground.chat_side_panel import (SAMPLING_FIELDS, SpeculateFields,
                                                       read_sampling_params, side_panel)
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.considered_panel import CANDIDATES_PER_STAGE, ConsideredPanel
from llm_playground.playground.messages import ChatFinished, ChatProgress, ModelInfo
from llm_playground.playground.stats_strip import StatsStrip

class UserMessage(Static):
    """One user turn in the chat log."""
    def __init__(self, text: str) -> None:
        super().__init__(f"[b]you[/b]  {escape(text)}", classes="user-message")


class ChatView(ChatColourModes, Horizontal):
    """Conversation on the left, settings on the right."""
    BINDINGS = [
        Binding("escape", "stop", "Stop answer", id="chat.stop",
                tooltip="Stop the answer being written; the text so far is kept"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate",
                tooltip="Write the last answer again (sampling: with the next seed)"),
        Binding("ctrl+l", "clear", "Clear chat", id="chat.clear", show=False,
                tooltip="Empty the conversation, its figures in the strip and its prompt"),
        Binding("f6", "copy_reply", "Copy reply", id="chat.copy", show=False,
                tooltip="Copy the last answer to the clipboard"),
        Binding("f7", "toggle_token_colours", "Token colours", id="chat.token_colours", show=False,
                tooltip="Draw the answers as coloured token runs (or as Markdown again)"),
    ]
    token_colours = reactive(False, init=False)

    @dataclass
    class Generate(Message):
        """Start a generation of `prompt_ids` with `params` under the view's `ticket`."""
        ticket: int
        prompt_ids: list[int]
        params: SamplingParams

    @dataclass
    class Cancel(Message):
        """Stop generation `ticket`, keeping its text."""
        ticket: int

    @dataclass
    class PromptChanged(Message):
        """The current chat's last prompt ([] once the chat is cleared)."""
        prompt_ids: list[int]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conversation = Conversation()
        self.ticket: int | None = None          # the generation in flight
        self._next_ticket = 0
        self._answer: AssistantMessage | None = None
        self.last_prompt_ids: list[int] = []
        self.model: ModelInfo | None = None
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
        yield from side_panel()               # playground/chat_side_panel.py

    # ---- settings ----------------------------------------------------------------------------
    def set_model(self, info: ModelInfo) -> None:
        """The loaded model; show its own default system prompt, unless the user typed one."""
        from llm_playground.model.engine.chat_template import default_system_prompt
        self.model = info
        area = self.query_one("#system-prompt", TextArea)
        unedited = area.text in ("", self.model_system_prompt or "")
        self.model_system_prompt = default_system_prompt(info.chat_template)
        area.placeholder = "none (this model's template has no default)"
        if unedited:
            area.text = self.model_system_prompt or ""
        self.query_one(SpeculateFields).show_setting(info.speculate)

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
        return read_sampling_params(raw)

    # ---- actions ------------------------------------------------------------------------------
    async def send(self, text: str) -> None:
        """Add a user turn and start its answer (a notice instead while busy or with no model)."""
        text = text.strip()
        if not text:
            return
        if self.ticket is not None:
            self.notify("An answer is still streaming: wait, or press Esc to stop it.", severity="warning")
            return
        if self.model is None:
            if self.load_error is not None:
                self.notify("No model is loaded (restart with --model PATH); your message is kept "
                            "in the box.", severity="warning")
            else:
                self.notify("The model is still loading; your message is kept in the box.",
                            severity="warning")
            return
        self.query_one("#prompt", Input).value = ""
        await self.query_one("#chat-log").mount(UserMessage(text))
        self.conversation.turns.append(Turn("user", text))
        if not await self._start():
            self.conversation.turns.pop()      # not sent: the next turn must not carry it

    async def action_regenerate(self) -> None:
        """Ctrl+R: generate the last answer again."""
        await self.regenerate()

    async def action_clear(self) -> None:
        """Ctrl+L: clear the conversation."""
        await self.clear()

    def action_stop(self) -> None:
        """Esc: stop the answer being generated, keeping what it wrote."""
        if self.cancel():
            self.notify("Stopping the answer; what it wrote is kept.")

    def action_copy_reply(self) -> None:
        """F6: copy the last reply to the clipboard."""
        text = self.last_reply()
        if not text:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {len(text)} characters.")

    def action_toggle_token_colours(self) -> None:
        """F7: cycle the token colours: off, boundaries, speculation, probability."""
        self.cycle_colour_mode()

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
        """Stop any answer and empty the conversation, the log and the strip: the cleared chat's
        figures (KV blocks, prefix hits) and its prompt (F10's weights) go with it."""
        self.cancel()
        self.ticket, self._answer = None, None        # a late message of the old answer is dropped
        self._prompt_blinks(True)
        self.conversation.turns.clear()
        self.last_prompt_ids = []
        self.post_message(self.PromptChanged([]))
        self.query_one(StatsStrip).clear()
        self.query_one(ConsideredPanel).clear()
        await self.query_one("#chat-log").remove_children()

    def cancel(self) -> bool:
        """Ask the worker to stop the answer in flight; False when there is none."""
        if self.ticket is None:
            return False
        self.post_message(self.Cancel(self.ticket))
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

    async def _start(self) -> bool:
        """Send the conversation to the engine; False (and a notification) when it cannot be."""
        info = self.model
        self.conversation.system_prompt = self.system_prompt()
        try:
            params = self.sampling_params()
            record = self.colour_mode is ColourMode.PROBABILITY    # the considered panel's data
            if record:
                params = replace(params, logprobs=CANDIDATES_PER_STAGE)
            ids = self.conversation.prompt_ids(info.tokenizer, info.chat_template)
        except Exception as error:
            self.notify(f"{error}", title="Not sent", severity="error")
            return False
        self._next_ticket += 1
        self.ticket = self._next_ticket
        self.last_prompt_ids = ids
        self.post_message(self.PromptChanged(list(ids)))
        self._answer = AssistantMessage(params.n, params.max_tokens)
        self.query_one(ConsideredPanel).begin_answer(self.ticket, record)
        self._prompt_blinks(False)
        log = self.query_one("#chat-log", VerticalScroll)
        await log.mount(self._answer)
        log.scroll_end(animate=False)
        self.post_message(self.Generate(self.ticket, ids, params))
        return True

    def _prompt_blinks(self, on: bool) -> None:
        """The prompt's cursor blinks only while no answer streams (as the app was started): each
        blink is a screen refresh of its own, UI-thread time taken from the engine."""
        self.query_one("#prompt", Input).cursor_blink = on and getattr(self.app, "cursor_blink", True)

    # ---- worker messages (routed by the app) -------------------------------------------------
    async def show_progress(self, msg: ChatProgress) -> None:
        """Stream the in-flight answer's new text and update the stats strip."""
        if msg.ticket != self.ticket or self._answer is None:
            return
        grew = await self._answer.stream(msg.texts, msg.token_ids, msg.finish_reasons,
                                         self.model.tokenizer, self.log_mode())
        self.query_one(StatsStrip).show(msg.stats, live=True)
        self.query_one(ConsideredPanel).show_speculation(msg.token_ids, msg.stats.speculated,
                                                         self.model.tokenizer)
        if grew:                       # only a taller answer moves the end of the log
            self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    async def show_finished(self, msg: ChatFinished) -> None:
        """Finish the answer, record it in the conversation, notify of errors and early stops."""
        if msg.ticket != self.ticket or self._answer is None:
            return
        answer, self._answer = self._answer, None
        try:
            await answer.finish(msg.texts, msg.token_ids, msg.finish_reasons, msg.error,
                                self.model.tokenizer, self.log_mode())
        finally:
            self.ticket = None
            self._prompt_blinks(True)
        self.query_one(StatsStrip).show(msg.stats)
        self.query_one(ConsideredPanel).show_speculation(msg.token_ids, msg.stats.speculated,
                                                         self.model.tokenizer)
        produced = msg.texts[0] if msg.texts else ""
        if produced:
            self.conversation.turns.append(Turn("assistant", produced))
        elif msg.error:
            self.conversation.turns.pop()   # never sent: the next turn must not carry it
        if msg.error:
            self.notify(msg.error, title="Generation stopped", severity="error", timeout=8)
        elif FinishReason.KV_CACHE_FULL in msg.finish_reasons:
            self.notify("The answer stopped early: the KV cache is full. Clear the chat "
                            "(ctrl+l) or restart with a larger --kv-blocks.",
                            title="Out of KV cache", severity="warning", timeout=8)
        elif FinishReason.CONTEXT_FULL in msg.finish_reasons:
            self.notify("The answer stopped early: the model's context is full. Clear the chat "
                            "(ctrl+l) to start a new conversation.",
                            title="Context full", severity="warning", timeout=8)
        self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    # ---- widget events -----------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    async def _prompt_submitted(self, event: Input.Submitted) -> None:
        """Enter in the prompt sends the message."""
        event.stop()
        await self.send(event.value)

    @on(Button.Pressed, "#regenerate")
    async def _regenerate_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await self.regenerate()

    @on(Button.Pressed, "#clear")
    async def _clear_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await self.clear()

    @on(Button.Pressed, "#copy")
    def _copy_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_copy_reply()

    @on(Switch.Changed, "#token-colours")
    def _colours_switched(self, event: Switch.Changed) -> None:
        """The token-colours switch turns colouring on or off."""
        if event.value != (self.colour_mode is ColourMode.BOUNDARIES):
            self.set_colour_mode(ColourMode.BOUNDARIES if event.value else ColourMode.OFF)
