"""The Chat tab's side panel: system prompt, sampling settings, token-colour switch, buttons.

`side_panel()` yields the panel (`#chat-side`) from inside `ChatView.compose`: the system-prompt
TextArea (`#system-prompt`), one label + Input row per entry of `SAMPLING_FIELDS` (its id,
label, default text and Input type; the Input's id is `param-<field>`), the token-colours
Switch (`#token-colours`) and the Regen / Clear / Copy buttons. `read_sampling_params` turns the
fields' texts into a `SamplingParams` (an empty field takes its neutral value), raising one
readable ValueError on a bad value; the engine's own checks (model/engine/sampling_params.py)
still apply on top.
It does not handle the panel's events or query its widgets: the view (playground/chat_view.py)
does both and passes the field texts in.
"""
from __future__ import annotations

from collections.abc import Iterator

from textual.containers import Horizontal, VerticalScroll
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
        with Horizontal(id="chat-buttons"):
            for label, bid, tip in (("Regen", "regenerate", "Regenerate the last answer (ctrl+r)"),
                                    ("Clear", "clear", "Clear the conversation (ctrl+l)"),
                                    ("Copy", "copy", "Copy the last answer (f6)")):
                button = Button(label, id=bid)
                button.tooltip = tip
                yield button


def read_sampling_params(raw: dict[str, str]) -> SamplingParams:
    """SamplingParams from the fields' stripped texts (by field id); ValueError on bad values."""
    try:
        return SamplingParams(temperature=float(raw["temperature"] or 0), top_p=float(raw["top_p"] or 1),
                              top_k=int(raw["top_k"] or 0), max_tokens=int(raw["max_tokens"] or 256),
                              seed=int(raw["seed"]) if raw["seed"] else None, n=int(raw["n"] or 1))
    except ValueError as error:
        raise ValueError(f"sampling settings: {error}") from None
