"""The playground with speculative decoding, on the real engine (tiny random model, fake clock):
the Chat settings' toggle and K switch the engine's speculation, the stats strip shows the
acceptance rate and tokens per step (or, for an answer the engine refuses to speculate for,
that it is off and why), and F7's speculation mode colours the reply's tokens by
who chose them. Oracle: the engine's own StepReports and RequestOutputs (record_steps).

The tiny model repeats itself (its random weights favour a few letters), so prompt lookup finds
n-grams to propose and some proposals are accepted.
"""
from __future__ import annotations

import asyncio

from rich.console import Console
from tiny_engine import record_steps, tiny_engine
from ui_helpers import make_app, wait_for

from llm_playground.playground.chat_view import AssistantMessage, ChatView
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.considered_panel import ConsideredPanel
from llm_playground.playground.speculation_colours import ACCEPTED, TARGET
from llm_playground.playground.stats_strip import StatsStrip, format_stats
from textual.widgets import Input, Switch


def plain(content) -> str:
    console = Console(width=300, record=True, color_system=None)
    console.print(content)
    return console.export_text()


def test_toggle_switches_speculation_and_f7_colours_accepted_tokens():
    engine = tiny_engine(num_blocks=256)
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(130, 44)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            chat = app.query_one(ChatView)
            assert not app.query_one("#speculate", Switch).value      # started with it off
            app.query_one("#param-max_tokens", Input).value = "48"
            app.query_one("#param-temperature", Input).value = "0"      # greedy: repeats
            app.query_one("#speculate-k", Input).value = "3"
            app.query_one("#speculate", Switch).value = True
            await wait_for(pilot, lambda: str(engine.speculate) == "ngram:3")
            await pilot.click("#prompt")
            await pilot.press(*"the the the", "enter")
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2,
                           timeout=60)
            await pilot.pause(0.1)
            outs = [o for r in reports for o in r.outputs if o.request_id == 0]
            flags = [f for o in outs for f in (o.speculated or [False] * len(o.new_token_ids))]
            ids = [t for o in outs for t in o.new_token_ids]
            proposed = sum(o.spec_proposed for o in outs)       # this answer's own counts
            accepted = sum(o.spec_accepted for o in outs)
            assert proposed > 0 and accepted == sum(flags) > 0
            assert (proposed, accepted) == (sum(r.spec_proposed for r in reports),
                                            sum(r.spec_accepted for r in reports))   # alone
            # the stats strip: acceptance and tokens per step, as the outputs say
            stats = app.query_one(StatsStrip).stats
            assert (stats.spec_proposed, stats.spec_accepted) == (proposed, accepted)
            text = format_stats(stats)
            assert f"spec accept [b]{100 * accepted / proposed:.0f}%[/]" in text
            steps = sum(1 for r in reports if r.num_decode_tokens and not r.num_prefill_tokens)
            assert f"[b]{(len(ids) - 1) / steps:.2f}[/] tok/step" in text
            # F7 to speculation: each span coloured by its first token's flag
            while chat.colour_mode is not ColourMode.SPECULATION:
                await pilot.press("f7")
            await pilot.pause()
            note = app.query_one(ConsideredPanel).query_one("#considered-note").content
            assert f"accepted draft  {accepted}" in plain(note)
            styles = [span.style for span in note.spans if span.style in (ACCEPTED, TARGET)]
            answer = app.query(AssistantMessage).last()
            assert list(answer.ids[0]) == ids
            assert styles.count(ACCEPTED) > 0 and styles.count(TARGET) > 0
            # off again: the engine decodes plainly from the next step on
            app.query_one("#speculate", Switch).value = False
            await wait_for(pilot, lambda: str(engine.speculate) == "off")
            assert engine.spec_planner is None

    asyncio.run(run())


def test_strip_says_when_the_engine_refuses_to_speculate_for_the_answer():
    """A sliding pattern (local:8) with speculation on: the answer decodes plainly, the strip
    says so and its tooltip says why (the engine's own RequestOutput.speculation_refused)."""
    engine = tiny_engine(num_blocks=256, speculate="ngram:3", attention="local:8")
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(130, 44)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            chat = app.query_one(ChatView)
            app.query_one("#param-max_tokens", Input).value = "12"
            await pilot.click("#prompt")
            await pilot.press(*"the the the", "enter")
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2,
                           timeout=60)
            await pilot.pause(0.1)
            notes = [o.speculation_refused for r in reports for o in r.outputs
                     if o.speculation_refused]
            assert len(notes) == 1 and "local:8" in notes[0]
            strip = app.query_one(StatsStrip)
            assert strip.stats.spec_refused == notes[0]
            assert "spec [b]off[/] here" in format_stats(strip.stats)
            assert strip.query_one("#stats-text").tooltip == notes[0]

    asyncio.run(run())
