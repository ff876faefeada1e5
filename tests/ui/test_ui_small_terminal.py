"""At 80 x 24 (and at the snapshot size) every label, button, field hint, header and footer key of
each tab is on screen in full: wrapped where it must be, never cut.

Found by a new-user trial at 80 x 24: the header lost its KV size, the Chat strip showed only
"TTFT ... prefill / 2,000 tok/s · decode" (tokens, KV blocks and prefix hits were cut), the side
panel's buttons were below the fold, the Tokenizers fields read "corpus" and "Sentenc", the KV
title "Physical KV blocks (ho", the Attention buttons "A" and "We" and both titles were cut, the
footer ended in "^t Dark" and F1 help ran past the right edge.

Oracle: the screen itself. For each widget, its whole text (label, button label, placeholder,
footer key and description) must appear, in order, inside the widget's region of the rendered
screen (whitespace ignored, so wrapped text counts; text hidden by a scroll container or the
screen edge does not).
"""
from __future__ import annotations

import asyncio
import re

import pytest
from tiny_engine import hold, tiny_engine
from ui_helpers import attention_drawn, make_app, wait_for

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.attention_view import AttentionView
from llm_playground.playground.chat_view import ChatView
from llm_playground.playground.messages import CacheUpdated

# Scrolling content (answers, token spans, block tables) may run past the edge; it scrolls.
SCROLLING = {"chat-log", "kv-tables"}
SCROLLING_CLASSES = {"answer", "answer-tokens", "tok-spans", "user-message"}


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _wanted(widget) -> str:
    kind = type(widget).__name__
    if kind == "Input":
        return widget.value or widget.placeholder
    if kind == "FooterKey":
        return f"{widget.key_display} {widget.description}"
    return str(widget.render())


def shown_in_full(app) -> tuple[list[str], list[str]]:
    """(every widget checked, the ones whose text is not all on screen), as readable lines."""
    strips = app.screen._compositor.render_strips()
    checked, cut = [], []
    for w in app.screen.query("Label, Button, Static, Input, HeaderTitle, FooterKey, ContentTab"):
        if not w.display or not w.visible or w.region.area == 0:
            continue
        if w.id in SCROLLING or SCROLLING_CLASSES & set(w.classes) or \
                any(a.id in SCROLLING for a in w.ancestors_with_self):
            continue
        want = _wanted(w)
        if not want.strip():
            continue
        r = w.region
        got = "".join(s.crop(r.x, r.right).text for s in strips[r.y:r.bottom])
        name = f"{type(w).__name__}#{w.id or ''} {want!r}"
        checked.append(name)
        if _squash(want) not in _squash(got):
            cut.append(f"{name}: the screen shows {got!r}")
    return checked, cut


async def _tour(pilot) -> dict[str, tuple[list[str], list[str]]]:
    """Visit every tab in a state with its longest texts; return shown_in_full for each."""
    app = pilot.app
    engine = app.engine_worker.engine
    await wait_for(pilot, lambda: app.model_info is not None)
    chat = app.query_one(ChatView)
    await pilot.click("#prompt")
    await pilot.press(*"hi", "enter")
    await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
    app.clear_notifications()
    seen = {}
    await pilot.pause(0.2)
    seen["chat"] = shown_in_full(app)

    await pilot.press("f3")
    await pilot.pause(0.2)
    seen["tokenizers"] = shown_in_full(app)

    hold(engine)                            # the test steps it: running sequences for the tables
    tok = engine.tokenizer
    engine.add_request(tok.encode_ordinary("a prompt for the pool"), SamplingParams(max_tokens=40))
    engine.add_request(tok.encode_ordinary("two samples"), SamplingParams(max_tokens=40, n=2))
    for _ in range(3):
        report = engine.step()
    app.post_message(CacheUpdated(report.cache, report.sequences, report.num_running, report.num_waiting))
    await pilot.press("f4")
    app.query_one("#kv-grid").select(1)
    await pilot.pause(0.2)
    seen["kv"] = shown_in_full(app)

    await pilot.press("f5")
    view = app.query_one(AttentionView)
    view.query_one("#attn-spec").value = "streaming:4,256"
    view.show_mask("streaming:4,256")       # shown, not applied: the title says what the engine runs
    await pilot.press("f10")
    await wait_for(pilot, lambda: view.weights is not None and attention_drawn(app))
    app.set_focus(None)
    app.clear_notifications()
    await pilot.pause(0.2)
    seen["attention"] = shown_in_full(app)
    return seen


# What the trial found cut at 80 x 24, by tab: each must be among the widgets checked.
MUST_CHECK = {
    "chat": ["HeaderTitle", "#stats-text", "#prompt", "token colours", "#regenerate", "#clear",
             "#copy", "Dark/light", "Stop answer", "Regenerate"],
    "tokenizers": ["#tok-train-files", "#tok-spm-path", "#tok-train", "#tok-spm-add", "#percentage"],
    "kv": ["Physical KV blocks (hover or arrows for details)", "#kv-totals", "#kv-formula",
           "#kv-load", "#kv-block-info"],
    "attention": ["#attn-apply", "#attn-compute", "#attn-mask-title", "#attn-weights-title"],
}


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_every_label_is_shown_in_full(size):
    app = make_app(tiny_engine())

    async def run():
        async with app.run_test(size=size) as pilot:
            return await _tour(pilot)

    seen = asyncio.run(run())
    problems = []
    for tab, (checked, cut) in seen.items():
        problems += [f"{tab}: {line}" for line in cut]
        for needle in MUST_CHECK[tab]:
            if not any(needle in name for name in checked):
                problems.append(f"{tab}: {needle} was not on screen to check")
    assert not problems, "\n".join(problems)


def test_help_text_fits_80_columns():
    """F1 help was 90 columns wide: at 80 its lines ran past the edge ("the s", "spe")."""
    app = make_app(tiny_engine())

    async def run():
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            await pilot.press("f1")
            await pilot.pause(0.3)
            panel = app.screen.query_one("VerticalScroll")
            assert panel.region.right <= 80
            text = "".join(s.text for s in app.screen._compositor.render_strips())
            assert "The side panel holds" in text and "system prompt" in text

    asyncio.run(run())
