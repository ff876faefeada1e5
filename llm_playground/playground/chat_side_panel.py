"""The Chat tab's side panel: system prompt, sampling settings, token-colour switch, buttons.

`side_panel()` yields the panel (`#chat-side`) from inside `ChatView.compose`: the system-prompt
TextArea (`#system-prompt`), one label + Input row per entry of `SAMPLING_FIELDS` (its id,
label, default text and Input type; the Input's id is `param-<field>`), the token-colours
Switch (`#token-colours`), the speculation Switch (`#speculate`) and its K (`#speculate-k`;
`speculate_spec` says what they mean) and the Regen / Clear / Copy buttons. `read_sampling_params` turns the
fields' texts into a `SamplingParams` (an empty field takes its neutral value), raising one
readable ValueError on a bad value; the engine's own checks (model/engine/sampling_params.py)
still apply on top.
It does not handle the panel's events or query its widgets: the view (playground/chat_view.py)
does both and passes the field texts in.
"""
from __future__ import annotations

from collections.abc import Iterator

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Switch, TextArea

from llm_playground.model.engine.sampling_params import SamplingParams

SAMPLING_FIELDS = (  # (id, label, default, type)
    ("temperature", "temperature", "0.7", "number"),
    ("top_p", "top-p", "0.9", "number"),
    ("top_k", "top-k", "40", "integer"),
    ("max_tokens", "max tokens", "256", "integer"),
    ("seed", "seed", "0", "integer"),
    ("n", "n samples", "1", "integer"),
)


def side_panel() -> Iterator[Widget]:
    """The `#chat-side` panel and its widgets; call as `yield from side_panel()` in a compose."""
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
        yield SpeculateFields()
        with Horizontal(id="chat-buttons"):
            for label, bid, tip in (("Regen", "regenerate", "Regenerate the last answer (ctrl+r)"),
                                    ("Clear", "clear", "Clear the conversation (ctrl+l)"),
                                    ("Copy", "copy", "Copy the last answer (f6)")):
                button = Button(label, id=bid)
                button.tooltip = tip
                yield button


SPECULATE_K = 4      # proposals per step the toggle starts with


def speculate_spec(on: bool, k_text: str, started_with: str = "off") -> str:
    """The `--speculate` setting the toggle and K mean: off, or the method the engine was
    started with (a draft model) at K, else prompt lookup at K. ValueError for a bad K."""
    from llm_playground.model.engine.spec_config import parse_speculate
    if not on:
        return "off"
    k = k_text.strip() or str(SPECULATE_K)
    base = parse_speculate(started_with)
    if base.uses_draft_model:
        head = f"layers={base.draft_layers}" if base.draft_layers is not None else base.draft_path
        return str(parse_speculate(f"draft:{head}:{k}"))
    return str(parse_speculate(f"ngram:{k}"))


class SpeculateFields(Vertical):
    """The speculation toggle (`#speculate`) and its K (`#speculate-k`); a change (the switch,
    or Enter in K) posts `SpeculateFields.Requested` with what they say (the app routes it to
    the engine worker, which answers with SpeculateChanged)."""
    DEFAULT_CSS = "SpeculateFields { height: auto; }"

    @dataclass
    class Requested(Message):
        """The settings ask for speculation on or off with this K (text as typed)."""
        on: bool
        k_text: str

    def compose(self) -> ComposeResult:
        """Two setting rows: the switch and K."""
        with Horizontal(classes="field"):
            yield Label("speculate")
            switch = Switch(False, id="speculate")
            switch.tooltip = ("speculative decoding: prompt lookup (or the --speculate draft) "
                              "proposes K tokens, the model verifies them in one step")
            yield switch
        with Horizontal(classes="field"):
            yield Label("speculate K")
            yield Input(str(SPECULATE_K), id="speculate-k", type="integer")

    def show_setting(self, spec: str) -> None:
        """Show the engine's setting (`--speculate` at start-up) without asking for it again."""
        from llm_playground.model.engine.spec_config import parse_speculate
        cfg = parse_speculate(spec)
        switch = self.query_one("#speculate", Switch)
        with switch.prevent(Switch.Changed):
            switch.value = cfg.enabled
        if cfg.enabled:
            self.query_one("#speculate-k", Input).value = str(cfg.k)

    @on(Switch.Changed, "#speculate")
    @on(Input.Submitted, "#speculate-k")
    def _changed(self, event: Message) -> None:
        event.stop()
        self.post_message(self.Requested(self.query_one("#speculate", Switch).value,
                                         self.query_one("#speculate-k", Input).value))


def read_sampling_params(raw: dict[str, str]) -> SamplingParams:
    """SamplingParams from the fields' stripped texts (by field id); ValueError on bad values."""
    try:
        return SamplingParams(temperature=float(raw["temperature"] or 0), top_p=float(raw["top_p"] or 1),
                              top_k=int(raw["top_k"] or 0), max_tokens=int(raw["max_tokens"] or 256),
                              seed=int(raw["seed"]) if raw["seed"] else None, n=int(raw["n"] or 1))
    except ValueError as error:
        raise ValueError(f"sampling settings: {error}") from None
