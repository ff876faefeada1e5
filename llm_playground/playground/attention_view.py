"""The Attention tab: the current pattern's mask, and real attention weights as a heat map.

Left: the token-level mask of the pattern (model.sparsity) for a sequence of N tokens, pooled to
the widget's size, with its density (share of causal pairs kept). Right: the attention weights of
one layer and head for the last chat prompt, computed by the engine's reference path on the
engine thread when asked (`engine.attention_weights`). Applying a pattern sends it to the engine
(`engine.set_pattern`): the next requests run with it.

It does not compute attention itself; it draws what model.sparsity and the engine return.
"""
from __future__ import annotations

import torch
from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from llm_playground.model.engine.attention_patterns import PATTERN_SYNTAX, parse_pattern
from llm_playground.playground.mask_grid import HeatGrid
from llm_playground.playground.messages import AttentionReady

PRESETS = ["dense", "local:256", "atrous:64", "sparse:256,64", "streaming:4,256"]
CUSTOM = "custom"   # what the preset list shows while the engine runs a pattern typed by hand
DEFAULT_MASK_TOKENS = 2048
MAX_MASK_TOKENS = 16384


def mask_for(spec: str, n: int) -> tuple[torch.Tensor, float, str]:
    """(n, n) bool mask, density in percent, canonical name. Raises ValueError on a bad spec."""
    pattern = parse_pattern(spec)
    return pattern.token_mask(n), pattern.density(n), pattern.name


class AttentionView(Horizontal):
    """The Attention tab: a pattern's mask on the left, one layer/head's weights on the right."""
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pattern = "dense"          # what the engine runs (after PatternChanged)
        self.shown_pattern = "dense"    # what the mask picture shows
        self.density = 100.0
        self.weights: torch.Tensor | None = None

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
        """Draw the mask of `spec` (raises ValueError on a bad spec, leaving the old picture)."""
        n = self.mask_tokens()
        mask, density, name = mask_for(spec, n)
        self.query_one("#attn-mask", HeatGrid).set_matrix(mask, gamma=0.5)
        self.shown_pattern, self.density = name, density
        running = "" if name == self.pattern else f"  (engine runs {self.pattern})"
        self.query_one("#attn-mask-title", Label).update(
            f"mask [b]{escape(name)}[/], {n} tokens: density [b]{density:.1f}%[/] of causal pairs "
            f"(√ scale){escape(running)}")

    def set_engine_pattern(self, spec: str) -> None:
        """Record the engine's pattern, show it in the spec box, the preset list and the mask."""
        self.pattern = spec
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
        """Draw the weights as a heat map, square-root scaled against their maximum."""
        w = torch.tensor(msg.weights, dtype=torch.float32)   # (T, T)
        top = float(w.max()) if w.numel() else 0.0
        # square-root scale: attention is peaked (sinks, the diagonal); this keeps the rest visible
        self.weights = (w / top).sqrt() if top > 0 else w
        self.query_one("#attn-weights", HeatGrid).set_matrix(self.weights)
        self.query_one("#attn-weights-title", Label).update(
            f"weights layer [b]{msg.layer}[/] head [b]{msg.head}[/], {msg.token_count} tokens "
            f"(√ of weight / max; rows = queries)")

    def on_select_changed(self, event: Select.Changed) -> None:
        """A preset picked from the list goes into the spec box."""
        if event.select.id == "attn-preset" and event.value not in (Select.BLANK, CUSTOM):
            self.query_one("#attn-spec", Input).value = str(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the spec or size box applies the pattern."""
        if event.input.id in ("attn-spec", "attn-n"):
            event.stop()
            self.app.action_apply_pattern()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Apply and Weights buttons."""
        event.stop()
        if event.button.id == "attn-apply":
            self.app.action_apply_pattern()
        elif event.button.id == "attn-compute":
            self.app.action_attention_weights()
