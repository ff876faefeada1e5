"""The Attention tab: the current pattern's mask, and real attention weights as a heat map.

Left: the token-level mask of the pattern (model.sparsity) for a sequence of N tokens, pooled to
the widget's size, with its density (share of causal pairs kept). Right: the attention weights of
one layer and head for the current chat's last prompt (the chat view tells it, through the app,
whenever that changes; Ctrl+L clears it), computed by the engine's reference path on the engine
thread when asked. Applying a pattern (F9) posts `PatternRequested` and asking for weights (F10)
posts `WeightsRequested` upward; the app hands them to the engine worker, whose answers come back
as `set_engine_pattern` and `show_weights`. The engine's pattern is view state (`reactive`).

It does not compute attention itself; it draws what model.sparsity and the engine return. Its
torch work (masks, densities, scaling) runs off the UI thread (playground/off_ui_thread.py says
why: torch on the UI thread slows the engine for the rest of the session).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from llm_playground.model.engine.attention_patterns import PATTERN_SYNTAX, parse_pattern
from llm_playground.playground.mask_grid import HeatGrid
from llm_playground.playground.messages import AttentionReady, ModelInfo
from llm_playground.playground.off_ui_thread import run_off_ui

PRESETS = ["dense", "local:256", "atrous:64", "sparse:256,64", "streaming:4,256"]
CUSTOM = "custom"   # what the preset list shows while the engine runs a pattern typed by hand
DEFAULT_MASK_TOKENS = 2048
MAX_MASK_TOKENS = 16384


def mask_for(spec: str, n: int) -> tuple[torch.Tensor, float, str]:
    """(n, n) bool mask, density in percent, canonical name. Raises ValueError on a bad spec."""
    pattern = parse_pattern(spec)
    return pattern.token_mask(n), pattern.density(n), pattern.name


def scaled_weights(weights: list[list[float]]) -> torch.Tensor:
    """(T, T) weights as drawn: the square root of weight / max (attention is peaked, at sinks
    and the diagonal; the root keeps the rest visible)."""
    w = torch.tensor(weights, dtype=torch.float32)   # (T, T)
    top = float(w.max()) if w.numel() else 0.0
    return (w / top).sqrt() if top > 0 else w


class AttentionView(Horizontal):
    """The Attention tab: a pattern's mask on the left, one layer/head's weights on the right."""
    BINDINGS = [
        Binding("f9", "apply_pattern", "Apply pattern", id="attention.apply",
                tooltip="Draw the typed pattern's mask and run the next requests with it"),
        Binding("f10", "attention_weights", "Attention weights", id="attention.weights",
                tooltip="Compute the chosen layer and head's weights over the chat's last prompt"),
    ]
    pattern = reactive("dense", init=False)   # what the engine runs (after PatternChanged)

    @dataclass
    class PatternRequested(Message):
        """The user asked the engine to run new requests with this pattern."""
        spec: str

    @dataclass
    class WeightsRequested(Message):
        """The user asked for one layer and head's attention weights over these prompt ids."""
        prompt_ids: list[int]
        layer: int
        head: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shown_pattern = "dense"    # what the mask picture shows
        self.density = 100.0
        self.weights: torch.Tensor | None = None
        self.model: ModelInfo | None = None
        self._mask_generation = 0        # bumped per mask asked for; an older result is dropped
        self.prompt_ids: list[int] = []   # the current chat's last prompt ([] after Ctrl+L)

    def compose(self) -> ComposeResult:
        """Pattern toolbar and mask grid; layer/head toolbar and weights grid; a status line."""
        with Vertical(id="attn-mask-side"):
            with Horizontal(classes="toolbar"):
                yield Select([(p, p) for p in PRESETS + [CUSTOM]], value="dense", allow_blank=False,
                             id="attn-preset")
                yield Input("dense", id="attn-spec", placeholder=PATTERN_SYNTAX)
                yield Input(str(DEFAULT_MASK_TOKENS), id="attn-n", type="integer")
                yield Button("Apply", id="attn-apply")
            yield Label("", id="attn-mask-title", classes="section")
            yield HeatGrid(id="attn-mask")
        with Vertical(id="attn-weights-side"):
            with Horizontal(classes="toolbar"):
                yield Label("layer")
                yield Input("0", id="attn-layer", type="integer")
                yield Label("head")
                yield Input("0", id="attn-head", type="integer")
                yield Button("Weights", id="attn-compute")
            yield Label("Attention weights of the last prompt: press Weights", id="attn-weights-title",
                        classes="section")
            yield HeatGrid(id="attn-weights")
        yield Static("", id="attn-status")

    def on_mount(self) -> None:
        """Show the dense mask."""
        self.show_mask("dense")

    def mask_tokens(self) -> int:
        """The mask size from its box, 1..MAX_MASK_TOKENS; ValueError with a readable message."""
        try:
            n = int(self.query_one("#attn-n", Input).value)
        except ValueError:
            raise ValueError("the mask size must be a whole number of tokens") from None
        if not 1 <= n <= MAX_MASK_TOKENS:
            raise ValueError(f"the mask size must be between 1 and {MAX_MASK_TOKENS} tokens")
        return n

    def show_mask(self, spec: str) -> None:
        """Draw the mask of `spec` (raises ValueError on a bad spec or size, leaving the old
        picture). The mask and its density are computed off the UI thread (off_ui_thread.py);
        the title says so until they are in."""
        n = self.mask_tokens()
        pattern = parse_pattern(spec)
        name = pattern.name
        self.shown_pattern = name
        self._mask_generation += 1
        generation = self._mask_generation
        self.query_one("#attn-mask-title", Label).update(f"mask [b]{escape(name)}[/], {n} tokens: computing…")
        run_off_ui(self, mask_for, spec, n,
                   deliver=lambda result, error: self._take_mask(generation, n, result, error))

    def _take_mask(self, generation: int, n: int, result, error: BaseException | None) -> None:
        if generation != self._mask_generation:
            return                                   # a newer mask was asked for
        if error is not None:
            self.notify(f"could not draw the mask: {error}", severity="error")
            return
        mask, density, name = result
        self.query_one("#attn-mask", HeatGrid).set_matrix(mask, gamma=0.5)
        self.density = density
        running = "" if name == self.pattern else f"  (engine runs {self.pattern})"
        self.query_one("#attn-mask-title", Label).update(
            f"mask [b]{escape(name)}[/], {n} tokens: density [b]{density:.1f}%[/] of causal pairs "
            f"(√ scale){escape(running)}")

    def set_model(self, info: ModelInfo) -> None:
        """The loaded model (its layer and head counts bound F10) and the engine's pattern."""
        self.model = info
        self.set_engine_pattern(info.pattern)

    def set_prompt(self, prompt_ids: list[int]) -> None:
        """The current chat's last prompt: what F10's weights are computed over."""
        self.prompt_ids = list(prompt_ids)

    def set_engine_pattern(self, spec: str) -> None:
        """Record the engine's pattern (the watcher shows it)."""
        if self.pattern == spec:
            self.watch_pattern(spec)      # the same pattern: draw it anyway (the box may differ)
        else:
            self.pattern = spec

    def watch_pattern(self, spec: str) -> None:
        """Show the engine's pattern in the spec box, the preset list and the mask."""
        self.query_one("#attn-spec", Input).value = spec
        self.query_one("#attn-preset", Select).value = spec if spec in PRESETS else CUSTOM
        self.show_mask(spec)

    def layer_head(self) -> tuple[int, int]:
        """(layer, head) from their boxes; ValueError when one is not a whole number."""
        try:
            return int(self.query_one("#attn-layer", Input).value), int(self.query_one("#attn-head", Input).value)
        except ValueError:
            raise ValueError("layer and head must be whole numbers") from None

    def show_weights(self, msg: AttentionReady) -> None:
        """Draw the weights as a heat map, square-root scaled against their maximum (scaled off
        the UI thread; `weights` is set when they are in)."""
        run_off_ui(self, scaled_weights, msg.weights,
                   deliver=lambda result, error: self._take_weights(msg, result, error))

    def _take_weights(self, msg: AttentionReady, weights, error: BaseException | None) -> None:
        if error is not None:
            self.notify(f"could not draw the weights: {error}", severity="error")
            return
        self.weights = weights
        self.query_one("#attn-weights", HeatGrid).set_matrix(self.weights)
        self.query_one("#attn-weights-title", Label).update(
            f"weights layer [b]{msg.layer}[/] head [b]{msg.head}[/], {msg.token_count} tokens "
            f"(√ of weight / max; rows = queries)")

    # ---- actions (F9, F10 and the buttons) --------------------------------------------------
    def action_apply_pattern(self) -> None:
        """Show the typed pattern's mask and ask for the engine to use it for new requests."""
        spec = self.query_one("#attn-spec", Input).value.strip()
        try:
            self.show_mask(spec)
        except ValueError as error:
            self.notify(f"{error}", title="Pattern", severity="error")
            return
        if self.model is None:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        self.post_message(self.PatternRequested(self.shown_pattern))

    def action_attention_weights(self) -> None:
        """Ask for the chosen layer and head's weights over the chat's last prompt."""
        try:
            layer, head = self.layer_head()
        except ValueError as error:
            self.notify(str(error), severity="error")
            return
        info = self.model
        if info is None:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        if not (0 <= layer < info.num_layers and 0 <= head < info.num_heads):
            self.notify(f"layer must be 0..{info.num_layers - 1} and head 0..{info.num_heads - 1}",
                        severity="error")
            return
        if not self.prompt_ids:
            self.notify("Send a chat message first: the weights are computed for the chat's last "
                        "prompt.", severity="warning")
            return
        self.notify(f"Computing layer {layer} head {head} over {len(self.prompt_ids)} tokens…")
        self.post_message(self.WeightsRequested(list(self.prompt_ids), layer, head))

    @on(Select.Changed, "#attn-preset")
    def _preset_picked(self, event: Select.Changed) -> None:
        """A preset picked from the list goes into the spec box."""
        if event.value not in (Select.BLANK, CUSTOM):
            self.query_one("#attn-spec", Input).value = str(event.value)

    @on(Input.Submitted, "#attn-spec, #attn-n")
    def _spec_submitted(self, event: Input.Submitted) -> None:
        """Enter in the spec or size box applies the pattern."""
        event.stop()
        self.action_apply_pattern()

    @on(Button.Pressed, "#attn-apply")
    def _apply_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_apply_pattern()

    @on(Button.Pressed, "#attn-compute")
    def _compute_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_attention_weights()
