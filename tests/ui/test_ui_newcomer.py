"""What a new user found in the playground (issue 22), each checked against the real engine on the
tiny random model (tests/ui/tiny_engine.py) with the fake clock: figures that must not lie, stop
tokens that are not text, the load test's events, the header at every width, number fields,
the palette, and the corpus box. Oracles: the engine's own StepReports and counters, the
engine's block copies as the runner received them, and the rendered screen itself.
"""
from __future__ import annotations

import asyncio
import pytest
from test_ui_chat import TEMPLATE_WITH_DEFAULT
from test_ui_small_terminal import shown_in_full
from textual.widgets import Input, TabbedContent
from tiny_engine import IM_END, answer_text, hold, record_steps, tiny_engine
from ui_helpers import attention_drawn, default_looking_factory, make_app, wait_for

from llm_playground.model.engine.outcomes import FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground import load_test as load_test_module
from llm_playground.playground.answer_view import END_MARKER
from llm_playground.playground.app import PlaygroundApp
from llm_playground.playground.attention_view import AttentionView
from llm_playground.playground.chat_view import AssistantMessage, ChatView
from llm_playground.playground.kv_view import KVView, human_bytes
from llm_playground.playground.messages import CacheUpdated
from llm_playground.playground.stats_strip import PLACEHOLDER, StatsStrip
from llm_playground.playground.token_spans import group_spans, visible


async def _ready(pilot):
    await wait_for(pilot, lambda: pilot.app.model_info is not None)


async def _send(pilot, text: str, **fields) -> ChatView:
    app = pilot.app
    chat = app.query_one(ChatView)
    for name, value in fields.items():
        app.query_one(f"#param-{name}", Input).value = str(value)
    n_turns = len(chat.conversation.turns)
    await pilot.click("#prompt")
    await pilot.press(*text, "enter")
    await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == n_turns + 2)
    return chat


def _strip_text(app) -> str:
    return str(app.query_one(StatsStrip).query_one("#stats-text").render())


def _decode_oracle(reports, request_id) -> float | None:
    """This request's decode rate from the engine's reports: its tokens after the first, over the
    time of the steps that produced them (what `playground generate` sums)."""
    tokens = seconds = 0.0
    seen = 0
    for r in reports:
        got = sum(len(o.new_token_ids) for o in r.outputs if o.request_id == request_id)
        if got:
            decoded = got if seen else got - 1
            seen += got
            if decoded:
                tokens, seconds = tokens + decoded, seconds + r.step_time_s
    return tokens / seconds if seconds else None


# ---- numbers that lie -------------------------------------------------------------------------
def test_the_decode_rate_is_a_dash_until_there_is_a_second_token():
    """Right after the first token the strip read "decode 0.0 tok/s" (and the real-terminal test
    flaked on it): one token has no decode rate. Two tokens have the engine's."""
    engine = tiny_engine()
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            chat = await _send(pilot, "hi", max_tokens=1)
            strip = app.query_one(StatsStrip)
            assert strip.stats.output_tokens == 1 and strip.stats.decode_tps is None
            assert "decode - tok/s" in _strip_text(app) and "0.0" not in _strip_text(app)
            assert strip.stats.ttft_s is not None and strip.stats.prefill_tps is not None
            await chat.clear()
            await _send(pilot, "hi", max_tokens=2)
            want = _decode_oracle(reports, 1)
            assert want is not None and strip.stats.decode_tps == pytest.approx(want)
            assert f"decode {want:,.1f} tok/s" in _strip_text(app)

    asyncio.run(run())


def test_after_esc_the_decode_rate_counts_only_the_answers_own_steps():
    """After Esc the rate went on counting time after the stop (3.2 tok/s for ~9). It must be
    the answer's tokens over the time of the steps that produced them, the load test's steps
    running beside it included in neither."""
    engine = tiny_engine(real_s=0.01)
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            chat = app.query_one(ChatView)
            await pilot.click("#prompt")
            await pilot.press(*"tell me", "enter")
            await wait_for(pilot, lambda: app.query(AssistantMessage)
                           and len(app.query(AssistantMessage).last().texts[0]) >= 5)
            await pilot.press("escape")
            await wait_for(pilot, lambda: chat.ticket is None)
            await wait_for(pilot, lambda: not engine.has_unfinished())
            for _ in range(3):                     # steps after the stop change nothing
                engine.add_request([5, 6, 7], SamplingParams(max_tokens=2))
                await wait_for(pilot, lambda: not engine.has_unfinished())
            stats = app.query_one(StatsStrip).stats
            want = _decode_oracle(reports, 0)
            assert app.query(AssistantMessage).last().status == "abort"
            assert stats.output_tokens == len(answer_text(reports, 0)[1])
            assert stats.decode_tps == pytest.approx(want)

    asyncio.run(run())


def test_ctrl_l_clears_the_strip_and_the_prompt_that_f10_uses():
    """After Ctrl+L the strip still showed the cleared chat's KV blocks and prefix hits, and F10
    computed weights for the cleared prompt."""
    engine = tiny_engine()
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            chat = await _send(pilot, "first")
            assert "KV " in _strip_text(app) and "prefix hits" in _strip_text(app)
            await pilot.press("ctrl+l")
            await pilot.pause(0.1)
            assert app.query_one(StatsStrip).stats is None and _strip_text(app) == PLACEHOLDER
            await pilot.press("f5")
            view = app.query_one(AttentionView)
            await pilot.press("f10")
            await pilot.pause(0.2)
            assert view.weights is None
            assert any("Send a chat message first" in n.message for n in app._notifications)
            await pilot.press("f2")
            await _send(pilot, "second one")
            await pilot.press("f5")
            await pilot.press("f10")
            await wait_for(pilot, lambda: view.weights is not None and attention_drawn(app))
            assert view.prompt_ids == chat.last_prompt_ids
            assert view.weights.shape == (len(chat.last_prompt_ids),) * 2

    asyncio.run(run())


def test_an_answer_cut_by_a_limit_says_which_and_per_sample_when_they_differ():
    """The status line under an answer names the typed finish reason of each sample that the
    model did not end itself (the engine's reports are the oracle)."""
    engine = tiny_engine(can_end=True, chat_template=TEMPLATE_WITH_DEFAULT)
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            # seed 8 (samples drawn with seeds 8 and 9): one sample ends by itself, one at max
            # tokens (found by trying; the next assertion checks it)
            await _send(pilot, "two endings", n=2, max_tokens=6, seed=8)
            reasons = {o.sample_index: o.finish_reason for r in reports for o in r.outputs if o.finished}
            assert set(reasons.values()) == {FinishReason.END_OF_SEQUENCE, FinishReason.MAX_TOKENS}
            status = str(app.query(AssistantMessage).last().query_one(".answer-status").render())
            for i in (0, 1):
                r = reasons[i]
                phrase = r.describe(6) if r.is_length else r.describe()
                assert f"sample {i + 1}: {phrase}" in status

    asyncio.run(run())


# ---- stop tokens are not text ----------------------------------------------------------------
def test_with_token_colours_the_stop_token_is_a_marker_not_text():
    """Replies ended with <|im_end|> printed as text, split over two lines."""
    engine = tiny_engine(can_end=True, chat_template=TEMPLATE_WITH_DEFAULT)
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            await _send(pilot, "hello")
            text, ids = answer_text(reports, 0)
            ends = [o.finish_reason for r in reports for o in r.outputs if o.finished]
            assert ends == [FinishReason.END_OF_SEQUENCE] and ids[-1] == IM_END and text
            await pilot.press("f7")
            await pilot.pause(0.1)
            answer = app.query(AssistantMessage).last()
            shown = str(answer.query_one("#tok-0").render())
            tok = engine.tokenizer
            spans = group_spans(ids[:-1], tok.id_to_bytes)
            assert "<|im_end|>" not in shown and "im_end" not in shown
            assert shown.replace("\n", "") == "".join(visible(s.text) for s in spans).replace("\n", "") + " " + END_MARKER
            assert answer.texts[0] == text
            assert str(answer.query_one(".answer-status").render()) == ""   # the model ended it

    asyncio.run(run())


# ---- the load test ---------------------------------------------------------------------------
def test_f8_shows_allocation_sharing_copy_on_write_preemption_and_freeing_with_a_large_pool(monkeypatch):
    """With the default pool (1,456 blocks of 16 tokens) nothing was ever preempted. The load
    test now runs where its requests fill the pool; every event must happen, and the counts on
    screen must be the engine's: its preemption counter and the block copies its runner got."""
    copies: list[int] = []
    created = []
    init = load_test_module.LoadTest.__init__

    def traced_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        submit = self.engine.runner.submit

        def counted(plan):
            copies.append(len(plan.block_copies))
            return submit(plan)
        self.engine.runner.submit = counted
        created.append(self.engine)

    monkeypatch.setattr(load_test_module.LoadTest, "__init__", traced_init)
    engine = tiny_engine(num_blocks=1456, block_size=16)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(140, 44)) as pilot:
            await _ready(pilot)
            await pilot.press("f4", "f8")
            worker = app.engine_worker
            await wait_for(pilot, lambda: created and not worker.load_running
                           and not created[0].has_unfinished(), timeout=120)
            await pilot.pause(0.4)
            load = created[0]
            kv = app.query_one(KVView)
            stats = kv.load_stats
            assert app.query_one(TabbedContent).active == "kv"
            assert load is not engine and stats.own_pool and stats.chat_pool_blocks == 1456
            assert stats.pool_blocks == load.cache_report().num_blocks < 1456
            assert stats.done and stats.finished == stats.requests == 8
            assert stats.allocated > 0 and stats.freed > 0 and stats.peak_shared > 0
            assert stats.preemptions == load.cache_report().preemptions > 0
            assert stats.copy_on_write == sum(copies) > 0
            shown = str(kv.query_one("#kv-load-stats").render())
            assert f"preempted {stats.preemptions}" in shown and f"copy-on-write {sum(copies)}" in shown
            assert "own pool" in str(kv.query_one("#kv-pool").render())

    asyncio.run(run())


def test_forked_sequences_are_explained_in_the_block_tables():
    engine = tiny_engine(num_blocks=64, block_size=4)
    hold(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(140, 44)) as pilot:
            await _ready(pilot)
            rid = engine.add_request(engine.tokenizer.encode_ordinary("two samples share this prompt"),
                                     SamplingParams(max_tokens=20, n=2))
            for _ in range(4):
                report = engine.step()
            app.post_message(CacheUpdated(report.cache, report.sequences, report.num_running, report.num_waiting))
            await pilot.press("f4")
            await pilot.pause(0.2)
            seqs = [s for s in report.sequences if s.request_id == rid]
            a, b = (s.block_table for s in seqs)
            shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            text = str(app.query_one("#kv-tables").render())
            assert f"req {rid}: 2 samples forked from one prompt" in text
            assert f"share their first {shared} block(s)" in text and shared > 0

    asyncio.run(run())


# ---- layout: header, number fields -----------------------------------------------------------
@pytest.mark.parametrize("width", [80, 100, 119, 120, 130, 160])
def test_the_header_is_laid_out_for_the_current_width(width):
    """The header was laid out for the size the app started at: after a resize to 80 columns the
    KV size disappeared, at 120 the line was cut. After a resize it must show the KV size and
    be whole."""
    app = PlaygroundApp(default_looking_factory(tiny_engine()), model_label="m", references=(), cursor_blink=False)

    async def run():
        async with app.run_test(size=(140, 40)) as pilot:
            await _ready(pilot)
            await pilot.resize_terminal(width, 30)
            await pilot.pause(0.3)
            info = app.model_info
            checked, cut = shown_in_full(app)
            header = [c for c in checked if c.startswith("HeaderTitle")]
            assert header and not [c for c in cut if c.startswith("HeaderTitle")], cut
            assert human_bytes(info.num_blocks * info.bytes_per_block) in header[0]
            if width >= 160:
                assert "1456 blocks × 16 tokens" in header[0] and "LLM playground" in header[0]

    asyncio.run(run())


@pytest.mark.parametrize("size", [(80, 24), (120, 30), (120, 36)], ids=["80x24", "120x30", "120x36"])
def test_every_number_field_shows_its_whole_value_while_typing(size):
    """At 120 columns the mask size read "048" for 2048 once focused (the cursor after the last
    digit scrolled the first one out). Every field, focused with the cursor at its end, must
    show its whole value."""
    app = make_app(tiny_engine())

    async def run():
        problems = []
        async with app.run_test(size=size) as pilot:
            await _ready(pilot)
            for tab in ("f2", "f3", "f4", "f5"):
                await pilot.press(tab)
                await pilot.pause(0.1)
                for box in app.screen.query(Input):
                    if not box.region.area or not box.value:
                        continue
                    box.focus()
                    box.cursor_position = len(box.value)
                    await pilot.pause(0.05)
                    strips = app.screen._compositor.render_strips()
                    r = box.region
                    got = "".join(s.crop(r.x, r.right).text for s in strips[r.y:r.bottom])
                    if box.value not in got:
                        problems.append(f"{tab} #{box.id} {box.value!r}: shows {got.strip()!r}")
        return problems

    assert not asyncio.run(run())


# ---- small ones ------------------------------------------------------------------------------
def test_ctrl_n_with_an_empty_corpus_puts_the_focus_in_the_corpus_box():
    app = make_app()

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f3")
            assert app.focused.id == "tok-text"
            await pilot.press("ctrl+n")
            await pilot.pause(0.1)
            assert app.focused.id == "tok-train-files"
            assert any("corpus files" in n.message for n in app._notifications)

    asyncio.run(run())


def test_the_palette_runs_a_tabs_action_from_another_tab():
    """A view's keys work in its tab; the palette offers them everywhere and runs them there."""
    engine = tiny_engine(num_blocks=1456, block_size=16)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            assert app.query_one(TabbedContent).active == "chat"
            command = next(c for c in app.get_system_commands(app.screen) if c.title == "Load test")
            command.callback()
            await wait_for(pilot, lambda: app.engine_worker.load_engine is not None
                           and app.query_one(TabbedContent).active == "kv")
            assert app.focused.id == "kv-grid"
            await wait_for(pilot, lambda: not app.engine_worker.load_running, timeout=120)
            await pilot.pause(0.2)
            assert app.query_one(TabbedContent).active == "kv"       # and it stayed there

    asyncio.run(run())


# ---- the UI thread runs no torch ---------------------------------------------------------------
def test_the_attention_tabs_torch_work_runs_on_a_thread_of_its_own(monkeypatch):
    """One 2,048-token mask drawn on the UI thread at start-up made every decode step twice as
    slow for the rest of the session (a second OpenMP pool: off_ui_thread.py says how). Every
    torch entry point the tab uses must run on a short-lived "ui-torch" thread: not the UI
    thread, and not a Textual worker (those threads are reused, so their pools would stay)."""
    import threading

    from llm_playground.model.engine import attention_patterns
    from llm_playground.playground import attention_view, mask_grid

    where: list[str] = []

    def on_own_thread(fn):
        def wrapped(*args, **kwargs):
            where.append(threading.current_thread().name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(attention_view, "mask_for", on_own_thread(attention_view.mask_for))
    monkeypatch.setattr(attention_view, "scaled_weights", on_own_thread(attention_view.scaled_weights))
    monkeypatch.setattr(mask_grid, "downsample", on_own_thread(attention_patterns.downsample))
    app = make_app(tiny_engine())

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot)
            await _send(pilot, "hi")
            await pilot.press("f5")
            view = app.query_one(AttentionView)
            view.query_one("#attn-spec", Input).value = "local:64"
            await pilot.press("f9", "f10")
            await wait_for(pilot, lambda: view.weights is not None and attention_drawn(app))
            await pilot.resize_terminal(100, 30)            # pooled again for the new size
            await pilot.pause(0.3)
            await wait_for(pilot, lambda: attention_drawn(app))

    asyncio.run(run())
    assert len(where) >= 5 and set(where) == {"ui-torch"}, where
