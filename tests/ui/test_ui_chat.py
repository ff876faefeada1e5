"""Pilot tests of the Chat tab against the real Engine on the tiny random model (tests/ui/
tiny_engine.py): the expected texts, token counts and rates come from the StepReports that engine
returned, or from a fresh engine run on the same prompt and settings."""
from __future__ import annotations

import asyncio

import pytest
from tiny_engine import TICK_S, answer_text, record_steps, tiny_engine
from ui_helpers import make_app, wait_for

from llm_playground.playground.chat_view import AssistantMessage, ChatView, UserMessage
from llm_playground.playground.stats_strip import StatsStrip


async def _ready(pilot, app):
    await wait_for(pilot, lambda: app.model_info is not None)


def test_typing_a_prompt_streams_the_reply():
    engine = tiny_engine(real_s=0.002)
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            await pilot.click("#prompt")
            await pilot.press(*"hello", "enter")
            chat = app.query_one(ChatView)
            await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 1)
            seen_partial = []
            await wait_for(pilot, lambda: seen_partial.append(app.query(AssistantMessage).last().texts[0])
                           or chat.ticket is None, step=0.005)
            answer = app.query(AssistantMessage).last()
            expected, ids = answer_text(reports, 0)         # what the engine released, request 0
            assert len(ids) == 256 and expected             # the default max tokens
            assert answer.texts[0] == expected and answer.ids[0] == tuple(ids)
            assert answer.status == "done"
            # it streamed: some intermediate text was a strict, non-empty prefix of the answer
            assert any(0 < len(t) < len(expected) and expected.startswith(t) for t in seen_partial)
            assert len(app.query(UserMessage)) == 1
            turns = chat.conversation.turns
            assert [(t.role, t.content) for t in turns] == [("user", "hello"), ("assistant", expected)]
            stats = app.query_one(StatsStrip).stats
            assert stats.output_tokens == len(ids)
            assert stats.decode_tps > 0 and stats.ttft_s is not None
            # the fake clock: a step is 2 ticks, the first token comes 2 ticks after arrival
            assert stats.decode_tps == pytest.approx(1 / (2 * TICK_S))
            assert stats.ttft_s == pytest.approx(2 * TICK_S)
            assert stats.decode_tps == pytest.approx(reports[-1].decode_tokens_per_s)
            # the prompt sent to the engine is the conversation rendered and encoded
            assert chat.last_prompt_ids == engine.tokenizer.encode(
                chat.conversation.__class__(chat.conversation.system_prompt,
                                            turns[:1]).prompt_text(None), allowed_special="all")

    asyncio.run(run())


def test_escape_cancels_and_keeps_the_text():
    engine = tiny_engine(real_s=0.01)                      # about 30 ms a step, in real time
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            await pilot.click("#prompt")
            await pilot.press(*"tell me", "enter")
            chat = app.query_one(ChatView)
            await wait_for(pilot, lambda: app.query(AssistantMessage) and len(app.query(AssistantMessage).last().texts[0]) >= 3)
            await pilot.press("escape")
            await wait_for(pilot, lambda: chat.ticket is None)
            answer = app.query(AssistantMessage).last()
            # the whole answer: the same prompt and settings, uninterrupted, on a fresh engine
            ref = tiny_engine()
            full = ref.tokenizer.decode(ref.generate(chat.last_prompt_ids, chat.sampling_params()))
            assert answer.status == "abort"
            assert answer.texts[0] == answer_text(reports, 0)[0]     # all the engine released
            assert 0 < len(answer.texts[0]) < len(full) and full.startswith(answer.texts[0])
            assert chat.conversation.turns[-1].content == answer.texts[0]
            # the engine really stopped: nothing left to run, the blocks went back
            await wait_for(pilot, lambda: not engine.has_unfinished())
            report = engine.cache_report()
            assert report.num_used == 0 and report.num_shared == 0

    asyncio.run(run())


def test_prompt_longer_than_the_cache_is_a_notification_and_the_chat_survives():
    engine = tiny_engine(num_blocks=16, block_size=4)     # 64 tokens in the whole cache
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            await pilot.click("#prompt")
            await pilot.press(*"hi", "enter")                # fits: system prompt + hi
            chat = app.query_one(ChatView)
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
            first = list(chat.conversation.turns)
            # the answer ran the 64-token cache full: cut short, kept, and the user is told
            text, ids = answer_text(reports, 0)
            assert 0 < len(ids) < 256 and first[1].content == text
            # every one of the 64 slots holds a token (the last token sampled needs none)
            assert len(chat.last_prompt_ids) + len(ids) - 1 == 16 * 4
            ends = [o for r in reports for o in r.outputs if o.finished]
            assert len(ends) == 1 and ends[0].error is None          # cut, not refused
            assert any("KV cache" in n.message and "early" in n.message for n in app._notifications)
            chat.query_one("#prompt").value = "x" * 200
            await pilot.click("#prompt")
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.ticket is None and any(
                "KV cache" in n.message for n in app._notifications))
            assert chat.conversation.turns == first              # the failed turn is not carried on
            assert app.is_running
            assert len(app.query(UserMessage)) == 2              # both messages still on screen

    asyncio.run(run())


def test_regenerate_and_clear():
    engine = tiny_engine()
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            await pilot.click("#prompt")
            await pilot.press(*"one", "enter")
            chat = app.query_one(ChatView)
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2
                           and len(app.query(AssistantMessage)) == 1 and app.query(AssistantMessage).last().status == "done")
            assert len(app.query(AssistantMessage)) == 1
            await pilot.press("f6")                             # copy the reply
            assert app.clipboard == chat.conversation.turns[-1].content
            await pilot.press("ctrl+l")
            await pilot.pause(0.1)
            assert chat.conversation.turns == [] and not app.query(AssistantMessage)

    asyncio.run(run())


def test_n_samples_stream_side_by_side():
    engine = tiny_engine()
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            app.query_one("#param-n").value = "2"
            await pilot.click("#prompt")
            await pilot.press(*"two please", "enter")
            chat = app.query_one(ChatView)
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
            answer = app.query(AssistantMessage).last()
            (first, ids0), (second, ids1) = answer_text(reports, 0, 0), answer_text(reports, 0, 1)
            assert first and second and first != second           # seeds seed and seed + 1
            assert answer.n == 2 and list(answer.texts) == [first, second]
            assert app.query_one(StatsStrip).stats.output_tokens == len(ids0) + len(ids1) == 2 * 256

    asyncio.run(run())


# A ChatML template with a default system prompt, written the way SmolLM2's is.
TEMPLATE_WITH_DEFAULT = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are Tiny, a test model<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _send_and_wait(pilot, app, text):
    async def go():
        await pilot.click("#prompt")
        await pilot.press(*text, "enter")
        chat = app.query_one(ChatView)
        await wait_for(pilot, lambda: chat.last_prompt_ids and chat.ticket is None)
    return go()


def test_system_prompt_is_the_models_default_until_edited():
    """Unedited, the chat sends what `playground generate --chat` sends: no system message, so
    the template writes its own default, and the box shows that default (not a generic one)."""
    from llm_playground.model.engine.chat_template import render_chat
    from textual.widgets import TextArea
    engine = tiny_engine(chat_template=TEMPLATE_WITH_DEFAULT)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            chat = app.query_one(ChatView)
            box = app.query_one("#system-prompt", TextArea)
            alone = render_chat(TEMPLATE_WITH_DEFAULT, [{"role": "user", "content": "hi"}])
            assert box.text and box.text in alone             # the template's own default
            await _send_and_wait(pilot, app, "hi")
            assert chat.last_prompt_ids == engine.tokenizer.encode(alone, allowed_special="all")
            await chat.clear()
            box.text = "Be terse."
            await _send_and_wait(pilot, app, "hi")
            edited = render_chat(TEMPLATE_WITH_DEFAULT, [{"role": "system", "content": "Be terse."},
                                                         {"role": "user", "content": "hi"}])
            assert chat.last_prompt_ids == engine.tokenizer.encode(edited, allowed_special="all")

    asyncio.run(run())


def test_special_token_text_typed_in_a_message_stays_text():
    """Typing "<|im_end|>" must not end the user's turn: it is encoded as ordinary text."""
    from llm_playground.model.engine.chat_template import render_chat
    engine = tiny_engine(chat_template=TEMPLATE_WITH_DEFAULT)
    app = make_app(engine)
    typed = "a <|im_end|> b"

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            chat = app.query_one(ChatView)
            await _send_and_wait(pilot, app, typed)
            ids = chat.last_prompt_ids
            tok = engine.tokenizer
            end = tok.special_tokens["<|im_end|>"]
            text = render_chat(TEMPLATE_WITH_DEFAULT, [{"role": "user", "content": typed}])
            assert tok.decode(ids) == text
            # only the template's own <|im_end|> tokens: one per message before the answer
            assert ids.count(end) == text.count("<|im_end|>") - 1 == 2

    asyncio.run(run())


def test_regenerate_draws_a_new_sample():
    """With temperature > 0 and the fixed default seed, Ctrl+R sent the same seed again, so the
    "new" answer was the old one; it must use the next seed (shown in the field). Greedy
    decoding keeps its seed (it does not depend on it)."""
    engine = tiny_engine()
    sent = []
    add = engine.add_request
    engine.add_request = lambda ids, params=None, pattern=None: sent.append(params) or add(ids, params, pattern)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            chat = app.query_one(ChatView)
            done = lambda: chat.ticket is None and len(chat.conversation.turns) == 2  # noqa: E731
            await pilot.click("#prompt")
            await pilot.press(*"one", "enter")
            await wait_for(pilot, done)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: len(sent) == 2 and done())
            assert sent[0].temperature > 0 and sent[1].seed != sent[0].seed
            assert app.query_one("#param-seed").value == str(sent[1].seed)
            app.query_one("#param-temperature").value = "0"
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: len(sent) == 3 and done())
            assert sent[2].seed == sent[1].seed

    asyncio.run(run())


def test_a_long_error_under_the_answer_wraps_inside_the_chat_log():
    # Found at 160 columns: "error: prompt of 430 tokens needs more than the whole KV cache ...
    # - clear the chat (ctrl+l) or st" was cut at the log's edge (an auto-width Label), so the
    # advice was lost once the notification timed out.
    engine = tiny_engine(num_blocks=16, block_size=4)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            chat = app.query_one(ChatView)
            chat.query_one("#prompt").value = "x" * 200
            await pilot.click("#prompt")
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.ticket is None and len(app.query(AssistantMessage)) == 1)
            await pilot.pause()
            status = app.query_one(".answer-status")
            log = app.query_one("#chat-log")
            text = str(status.render())
            assert "--kv-blocks" in text and len(text) > log.content_region.width
            assert status.region.right <= log.content_region.right
            assert status.region.height >= 2                     # wrapped, all of it on screen

    asyncio.run(run())


def _one_token_answers(app, expect):
    """Send a message with max tokens 1, then regenerate it: each answer ends in the step that
    prefills its prompt. The strip must show the blocks it held and, the second time, the prompt
    tokens the prefix cache served (it showed KV 0 blocks and prefix hits 0/N: the engine's report
    left out sequences that finished in the step)."""
    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await _ready(pilot, app)
            chat = app.query_one(ChatView)
            strip = app.query_one(StatsStrip)
            done = lambda: chat.ticket is None and len(chat.conversation.turns) == 2  # noqa: E731
            app.query_one("#param-max_tokens").value = "1"
            app.query_one("#param-temperature").value = "0"
            await pilot.click("#prompt")
            await pilot.press(*"hello", "enter")
            await wait_for(pilot, done)
            n = len(chat.last_prompt_ids)
            blocks, cached = expect(n)            # blocks held; prompt tokens served the 2nd time
            assert strip.stats.output_tokens == 1 and strip.stats.prompt_tokens == n
            assert strip.stats.kv_blocks == blocks and strip.stats.cached_prompt_tokens == 0
            assert f"KV {blocks} blocks" in str(strip.query_one("#stats-text").render())
            await pilot.press("ctrl+r")                  # the same prompt again
            await wait_for(pilot, lambda: done() and strip.stats.cached_prompt_tokens > 0)
            assert strip.stats.kv_blocks == blocks and strip.stats.cached_prompt_tokens == cached
            text = str(strip.query_one("#stats-text").render())
            assert f"KV {blocks} blocks" in text and f"prefix hits {cached}/{n}" in text, text

    asyncio.run(run())


def test_a_one_step_answer_shows_its_kv_blocks_and_prefix_hits():
    """On the UI tests' engine (ChatML-like tokenizer, fake clock) with 8-token blocks."""
    engine = tiny_engine(num_blocks=64, block_size=8)
    # blocks for the tokens it computes (the prompt); a prompt token is always computed, so the
    # prefix cache serves the full blocks before the last prompt token
    _one_token_answers(make_app(engine), lambda n: (-(-n // 8), (n - 1) // 8 * 8))


def test_a_one_step_answer_shows_its_kv_blocks_and_prefix_hits_on_the_real_engine():
    """The same on the engine tests' own engine (tests/engine/engine_helpers.py: byte tokenizer,
    the real clock) with 4-token blocks."""
    from engine_helpers import engine as helpers_engine

    from llm_playground.playground.app import PlaygroundApp
    from llm_playground.playground.engine_factory import describe

    engine = helpers_engine(num_blocks=64, block_size=4)
    app = PlaygroundApp(lambda progress: (describe(engine, engine.loaded), engine),
                        model_label="tiny", cursor_blink=False)
    # blocks for the tokens it computes (the prompt); a prompt token is always computed
    _one_token_answers(app, lambda n: (-(-n // 4), (n - 1) // 4 * 4))
