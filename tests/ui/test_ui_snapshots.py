"""SVG snapshot tests of each view (pytest-textual-snapshot), 120 x 36 (the header ones at 80 x 24
and 120 x 30), no cursor blink.

The app runs the real Engine on the tiny random model of tests/ui/tiny_engine.py (fixed seeds, a
fake clock: every figure on screen is the same on each run). Its answers are lowercase gibberish
(letters, spaces, "." and ","), always max tokens long (the model never writes EOS).

Each test's docstring says what the picture shows; the baselines in __snapshots__/ were looked at
(converted to PNG) before they were accepted. Regenerate with `pytest tests/ui --snapshot-update`
after a deliberate change, and look at them again.
"""
from __future__ import annotations

from tiny_engine import hold, tiny_engine
from ui_helpers import attention_drawn, default_looking_factory, make_app, wait_for

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.app import PlaygroundApp
from llm_playground.playground.attention_view import AttentionView
from llm_playground.playground.chat_view import ChatView
from llm_playground.playground.messages import CacheUpdated
from llm_playground.playground.tokenizer_view import TokenizerPanel, TokenizerView

SIZE = (120, 36)


async def _ready(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.model_info is not None)


async def _chat_once(pilot, text: str) -> None:
    app = pilot.app
    await _ready(pilot)
    await pilot.click("#prompt")
    await pilot.press(*text, "enter")
    chat = app.query_one(ChatView)
    await wait_for(pilot, lambda: chat.conversation.turns and chat.conversation.turns[-1].role == "assistant"
                   and chat.ticket is None)
    app.clear_notifications()
    await pilot.pause(0.2)


def test_chat_view_snapshot(snap_compare):
    """Chat tab after one exchange: header "tiny-llama · cpu · float32 · KV 128 blocks × 4
    tokens (128.0 KiB)", the user line "you  hi", the assistant's answer as Markdown (one
    paragraph of the tiny model's 256 tokens of gibberish, about six lines) and under it the
    status "stopped at max tokens (256)" (a typed finish reason, not a guess), the two-line stats
    strip "TTFT 10 ms · prefill 1,800 tok/s · decode 100.0 tok/s" / "in 18 · out 256 tok · KV 69
    blocks · prefix hits 0/18" with a flat sparkline (every decode step 100 tok/s, drawn as a full
    band), the side panel (system prompt "none (this model's template has no default)", sampling
    fields, token colours switch (off), the speculate switch (off) and "speculate K" 4,
    Regen/Clear/Copy), the footer with the Chat tab's own keys
    first (esc Stop answer, ^r Regenerate), then the app's (F1 help, F2-F5 tabs, ^t)."""
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=lambda p: _chat_once(p, "hi"))


def test_chat_token_colours_light_theme_snapshot(snap_compare):
    """The same exchange in the light theme with token colours on (the switch green): the answer
    is drawn as coloured token spans instead of Markdown in eight pastel colours, no two
    neighbours alike (playground/token_colours.py), · for spaces, a merge ("the", "ell", "ing",
    "in") as one span; under it "stopped at max tokens (256)"; the side panel ends with the
    speculate switch and "speculate K" 4 before Regen/Clear/Copy."""
    async def before(pilot):
        await _chat_once(pilot, "hi")
        await pilot.press("ctrl+t", "f7")
        await pilot.pause(0.2)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_tokenizer_view_snapshot(snap_compare):
    """Tokenizers tab: the sample text in the box, the toolbar (corpus files, vocab size, Train,
    the training progress bar at 0%, SentencePiece path, Add .model), the model tokenizer's panel
    titled "tiny-llama (model): 112 tokens, 117 bytes, 1.04 bytes/token" (the title wraps) with
    coloured spans (black text, no two neighbours in the same colour, · for spaces, ↵ for the
    newline), the third span ("o") picked (red) and the detail below giving its id 111, bytes
    b'o', hex 6f and merges. The vocab field is wide enough to show its value while typed in."""
    async def before(pilot):
        await _ready(pilot)
        await pilot.press("f3")
        view = pilot.app.query_one(TokenizerView)
        await wait_for(pilot, lambda: len(view.query(TokenizerPanel)) == 1)
        view.query_one(TokenizerPanel).action_pick(2)
        pilot.app.set_focus(None)
        await pilot.pause(0.2)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_kv_view_snapshot(snap_compare):
    """KV cache tab mid-run (the test steps the engine 7 times itself): 64 blocks of 4 tokens,
    "the chat's pool: 64 blocks" under the title; three requests (one with n=2) hold green (used) and orange (shared) cells, a finished earlier
    request left four light-blue (cached) prefix blocks, the rest grey (free); block 1 is
    selected and described under the grid ("used, ref count 1, 4 tokens; owners: seq 1"). Right:
    totals (used 25, shared 7, cached 4, free 28, KV bytes in use, waste, the contiguous
    reservation, prefix hits 20/131), "running 4 waiting 0 preemptions 0", the per-block formula
    "2 × 2 layers × 2 KV heads × 8 dim × 4 B × 4 tokens = 1,024 B", the Load field, and each
    running sequence's block table (seq 1 reuses the earlier request's first blocks: cached 20;
    the two samples, seq 2 and seq 4, are listed together under an italic line "req 2: 2 samples
    forked from one prompt (seqs 2, 4) share their first 7 block(s); a write into a shared block
    copies it first (copy-on-write), then each grows its own")."""
    engine = tiny_engine(num_blocks=64, block_size=4)
    hold(engine)                             # the test steps it, to stop mid-run

    async def before(pilot):
        await _ready(pilot)
        tok = engine.tokenizer
        engine.generate(tok.encode_ordinary("the shared prefix of the earlier request"),
                        SamplingParams(max_tokens=3))
        engine.add_request(tok.encode_ordinary("the shared prefix of the second one"), SamplingParams(max_tokens=40))
        engine.add_request(tok.encode_ordinary("two samples share this prompt"), SamplingParams(max_tokens=40, n=2))
        engine.add_request(tok.encode_ordinary("a third, longer prompt that takes more blocks"),
                           SamplingParams(max_tokens=40))
        for _ in range(7):
            report = engine.step()
        pilot.app.post_message(CacheUpdated(report.cache, report.sequences, report.num_running, report.num_waiting))
        await pilot.press("f4")
        pilot.app.query_one("#kv-grid").select(1)
        pilot.app.clear_notifications()
        await pilot.pause(0.3)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=before)


def test_attention_view_snapshot(snap_compare):
    """Attention tab: left, the mask of "sparse:256,64" over 2,048 tokens pooled to fit (a bright
    band along the diagonal plus faint stripes every 64 keys), titled with its density in
    percent (the title wraps onto a second line); right, the tiny random model's attention
    weights for the 32-token chat prompt, layer 0 head 1, as a heat map under its two-line title:
    causal (nothing above the diagonal), scattered bright cells, the first query's single key
    brightest (top left)."""
    engine = tiny_engine()

    async def before(pilot):
        await _ready(pilot)
        await pilot.press("f5")
        view = pilot.app.query_one(AttentionView)
        view.query_one("#attn-spec").value = "sparse:256,64"
        await pilot.press("f9")
        await wait_for(pilot, lambda: view.pattern == "sparse:256,64")
        await pilot.press("f2")
        await pilot.click("#prompt")
        await pilot.press(*"show me the attention", "enter")
        chat = pilot.app.query_one(ChatView)
        await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
        await pilot.press("f5")
        view.query_one("#attn-head").value = "1"
        await pilot.press("f10")
        await wait_for(pilot, lambda: view.weights is not None and attention_drawn(pilot.app))
        pilot.app.set_focus(None)
        pilot.app.clear_notifications()
        await pilot.pause(0.3)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=before)


def test_help_screen_snapshot(snap_compare):
    """F1 help over the app: a bordered panel explaining the four tabs (the Tokenizers paragraph
    says neighbouring tokens never share a colour; the KV paragraph that Load (F8) may use a
    small pool of its own) and the palette line; the table of every key binding, with the tab
    that owns each, is below the fold (the panel scrolls)."""
    async def before(pilot):
        await _ready(pilot)
        await pilot.press("f1")
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def _resized_to(size, via):
    """run_before: wait for the model, resize to `via`, then back to `size` (the header must be
    laid out for the size it has now, not the one it had)."""
    async def before(pilot):
        await _ready(pilot)
        await pilot.resize_terminal(*via)
        await pilot.pause(0.2)
        await pilot.resize_terminal(*size)
        pilot.app.clear_notifications()
        await pilot.pause(0.3)
    return before


def _default_looking_app():
    return PlaygroundApp(default_looking_factory(tiny_engine()), model_label="the default model",
                         references=(), cursor_blink=False)


def test_header_after_a_resize_to_80x24_snapshot(snap_compare):
    """The Chat tab at 80 x 24 after starting there, growing to 140 x 40 and shrinking back, with
    the default model's description: the header is the model line alone, short form, whole and
    centred: "SmolLM2-135M-Instruct (Q4_1 GGUF) · cpu · int8 weights, bf16 KV · KV 511.9 MiB"
    (no app name, icon or clock space); the compact chat layout below it, the footer without tab
    keys."""
    assert snap_compare(_default_looking_app(), terminal_size=(80, 24), run_before=_resized_to((80, 24), (140, 40)))


def test_header_after_a_resize_to_120x30_snapshot(snap_compare):
    """The Chat tab at 120 x 30 after a visit to 80 x 24: the icon at the left, then the model
    line in full, whole: "SmolLM2-135M-Instruct (Q4_1 GGUF) · cpu · int8 weights, bfloat16 KV ·
    KV 1456 blocks × 16 tokens (511.9 MiB)" (the app's name would not fit beside it, so it is
    left out rather than the line cut); the wide chat layout, the footer with the tab keys."""
    assert snap_compare(_default_looking_app(), terminal_size=(120, 30), run_before=_resized_to((120, 30), (80, 24)))
