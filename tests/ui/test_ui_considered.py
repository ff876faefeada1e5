"""Pilot tests of "what the model considered" (playground/considered_panel.py and its strip and
table) against the real Engine on the tiny random model (tests/ui/tiny_engine.py).

A small host app mounts the panel alone and runs the real EngineWorker (the same thread worker
the playground runs) on the tiny engine, so every choice on screen is one the engine's sampler
reported in the step that drew the token: the tests compare with the engine's own
RequestOutputs (record_steps) and with the ids the worker reported as generated. The last test
drives the whole playground: F7 cycles off / boundaries / speculation / probability (the
speculation mode with data: tests/ui/test_ui_speculation.py).
"""
from __future__ import annotations

import asyncio

import pytest

from rich.console import Console
from textual.app import App, ComposeResult
from tiny_engine import IM_END, chat_tokenizer, record_steps, tiny_engine, tiny_factory
from ui_helpers import make_app, wait_for

import torch
from llm_playground.model.engine.sampler import sample_with_choices
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.playground.candidates_table import CandidatesTable, percent, token_label
from llm_playground.playground.chat_view import AssistantMessage, ChatView
from llm_playground.playground.colour_modes import ColourMode
from llm_playground.playground.considered_panel import CANDIDATES_PER_STAGE, ConsideredPanel
from llm_playground.playground.engine_worker import EngineWorker
from llm_playground.playground.messages import ChatFinished, ChoicesUpdated, ModelReady
from llm_playground.playground.probability_strip import STOP_MARK, ProbabilityStrip, probability_colour, units

PROMPT = [ord(c) for c in "the cat"]
FILTERED = SamplingParams(temperature=0.9, top_k=12, top_p=0.8, min_p=0.02, repetition_penalty=1.2,
                          seed=5, max_tokens=20, logprobs=CANDIDATES_PER_STAGE)


class Host(App):
    """The panel alone, fed by the real EngineWorker on an engine (the playground's routing)."""

    def __init__(self, engine) -> None:
        super().__init__()
        self.worker = EngineWorker(self.post_message, tiny_factory(engine))
        self.tokenizer = None
        self.finished: list[ChatFinished] = []

    def compose(self) -> ComposeResult:
        yield ConsideredPanel()

    def on_mount(self) -> None:
        self.query_one(ConsideredPanel).show_mode(ColourMode.PROBABILITY)
        self.run_worker(self.worker.run, name="engine", thread=True, exit_on_error=False)

    def on_model_ready(self, msg: ModelReady) -> None:
        self.tokenizer = msg.info.tokenizer

    def on_choices_updated(self, msg: ChoicesUpdated) -> None:
        self.query_one(ConsideredPanel).update_choices(msg.ticket, msg.choices, self.tokenizer)

    def on_chat_finished(self, msg: ChatFinished) -> None:
        self.finished.append(msg)


def plain(widget) -> str:
    """What a Static shows, as plain text (wide enough not to wrap)."""
    console = Console(width=200, record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()


async def generate(pilot, params: SamplingParams, ticket: int = 1) -> ChatFinished:
    app = pilot.app
    await wait_for(pilot, lambda: app.tokenizer is not None)
    app.worker.chat(ticket, PROMPT, params)
    await wait_for(pilot, lambda: any(f.ticket == ticket for f in app.finished))
    await pilot.pause(0.05)
    return next(f for f in app.finished if f.ticket == ticket)


def engine_choices(reports, request_id=0, sample=0) -> list:
    return [c for r in reports for o in r.outputs
            if o.request_id == request_id and o.sample_index == sample for c in o.choices]


def test_a_click_shows_the_tokens_candidates_from_the_engines_own_step():
    engine = tiny_engine()
    reports = record_steps(engine)
    app = Host(engine)

    async def run():
        async with app.run_test(size=(110, 40)) as pilot:
            done = await generate(pilot, FILTERED)
            strip = app.query_one(ProbabilityStrip)
            ours = engine_choices(reports)
            assert len(ours) == 20
            assert strip.choices == ours                          # the engine's objects, unchanged
            assert [c.token_id for c in strip.choices] == list(done.token_ids[0])   # drawn == emitted
            # click the third span on the first line
            u = strip.units[2]
            x = sum(len(v.text) for v in strip.units[:2])
            await pilot.click(ProbabilityStrip, offset=(x, 0))
            assert strip.cursor == u.first and app.focused is strip
            table = app.query_one(CandidatesTable)
            choice = ours[u.first]
            assert table.choice is choice and table.position == u.first
            text = plain(table)
            tok = chat_tokenizer()
            label = token_label(choice.token_id, tok.id_to_bytes, tok.is_special)
            assert f"token {u.first + 1}: {label} (id {choice.token_id})" in text
            assert f"drawn with p {percent(float(choice.probs[-1, choice.drawn_index]))}" in text
            for name in ("model", "rep pen", "temp", "top-k", "top-p", "min-p"):
                assert name in text
            drawn_row = next(line for line in text.splitlines() if line.lstrip().startswith("▶"))
            cells = [percent(float(p)) for p in choice.probs[:, choice.drawn_index]]
            assert drawn_row.split()[-len(cells):] == cells       # one cell per stage, in order
            assert " → ".join(f"{h:.2f}" for h in choice.entropy) in text

    asyncio.run(run())


def test_keys_move_the_cursor_and_switch_samples():
    engine = tiny_engine()
    reports = record_steps(engine)
    app = Host(engine)
    params = SamplingParams(temperature=1.0, seed=9, max_tokens=8, n=2, logprobs=3)

    async def run():
        async with app.run_test(size=(110, 40)) as pilot:
            await generate(pilot, params)
            strip = app.query_one(ProbabilityStrip)
            panel = app.query_one(ConsideredPanel)
            strip.focus()
            await pilot.press("right")                              # no cursor yet: the first token
            assert strip.cursor == 0
            await pilot.press("right", "right", "left")
            assert strip.cursor == 1
            await pilot.press("end")
            assert strip.cursor == 7
            await pilot.press("right")                              # stays on the last
            assert strip.cursor == 7
            table = app.query_one(CandidatesTable)
            assert table.choice is engine_choices(reports, 0, 0)[7]
            await pilot.press("right_square_bracket")               # sample 2 of 2
            assert panel.sample == 1 and strip.cursor is None
            assert strip.choices == engine_choices(reports, 0, 1)
            await pilot.press("home")
            assert table.choice is engine_choices(reports, 0, 1)[0]
            assert "sample 2/2" in str(app.query_one("#considered-head").content)

    asyncio.run(run())


def test_neighbours_differ_and_a_stop_token_is_a_marker():
    tok = chat_tokenizer()
    # real choices from the sampler: greedy draws of crafted logits, so the ids are known:
    # "é" split over two byte tokens, a space, then the stop token
    wanted = [0xC3, 0xA9, ord(" "), ord("a"), IM_END]
    logits = torch.full((len(wanted), tok.vocab_size), -5.0)
    for i, t in enumerate(wanted):
        logits[i, t] = 5.0 - i                                      # different probabilities
    _, choices = sample_with_choices(logits, [SamplingParams(logprobs=2)] * len(wanted),
                                     [None] * len(wanted), [[]] * len(wanted))
    got = units(choices, tok.id_to_bytes, tok.is_special)
    assert [u.text for u in got] == ["é", "·", "a", STOP_MARK]
    assert [(u.first, u.count) for u in got] == [(0, 2), (2, 1), (3, 1), (4, 1)]
    assert got[0].prob == pytest.approx(float(choices[0].probs[0, choices[0].drawn_index])
                                        * float(choices[1].probs[0, choices[1].drawn_index]), rel=1e-6)
    # the same bucket, shaded apart: every two neighbours differ
    colours = [probability_colour(0.95, shade=i % 2 == 1)[0] for i in range(4)]
    assert all(a != b for a, b in zip(colours, colours[1:]))


def test_speculation_mode_without_speculation_says_so():
    """Speculation off: the mode shows one line saying no token was verified, nothing else."""
    app = Host(tiny_engine())

    async def run():
        async with app.run_test(size=(110, 30)) as pilot:
            panel = app.query_one(ConsideredPanel)
            panel.show_mode(ColourMode.SPECULATION)
            await pilot.pause()
            note = app.query_one("#considered-note")
            assert panel.display and note.display
            assert "no token of this reply was verified" in str(note.content)
            assert not app.query_one("#considered-scroll").display
            assert not app.query_one(CandidatesTable).display
            panel.show_mode(ColourMode.OFF)
            await pilot.pause()
            assert not panel.display

    asyncio.run(run())


def test_f7_cycles_the_colour_modes_and_probability_mode_records_the_reply():
    engine = tiny_engine()
    reports = record_steps(engine)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            await pilot.click("#prompt")
            await pilot.press(*"hi", "enter")
            chat = app.query_one(ChatView)
            await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == 2)
            # sent with colours off: the engine was not asked for choices (no extra work)
            assert all(o.choices is None for r in reports for o in r.outputs)
            panel = app.query_one(ConsideredPanel)
            modes = []
            for _ in range(4):
                await pilot.press("f7")
                await pilot.pause()
                modes.append((chat.colour_mode, chat.token_colours, panel.display))
            assert modes == [(ColourMode.BOUNDARIES, True, False), (ColourMode.SPECULATION, False, True),
                             (ColourMode.PROBABILITY, False, True), (ColourMode.OFF, False, False)]
            await pilot.press("f7", "f7", "f7")                      # probability again
            strip = app.query_one(ProbabilityStrip)
            head = app.query_one("#considered-head")
            assert strip.choices == [] and "not recorded" in str(head.content)
            await pilot.click("#prompt")
            await pilot.press("ctrl+r")                               # regenerate in this mode
            await wait_for(pilot, lambda: chat.ticket is None and len(app.query(AssistantMessage)) == 1
                           and app.query(AssistantMessage).last().status == "done")
            await pilot.pause(0.05)
            answer = app.query(AssistantMessage).last()
            assert [c.token_id for c in strip.choices] == list(answer.ids[0])
            assert strip.choices == engine_choices(reports, request_id=1)
            await pilot.click(ProbabilityStrip, offset=(0, 0))
            assert app.query_one(CandidatesTable).choice is strip.choices[0]
            await pilot.click("#prompt")
            await pilot.press("ctrl+l")                               # a cleared chat shows nothing
            await pilot.pause()
            assert strip.choices == [] and app.query_one(CandidatesTable).choice is None

    asyncio.run(run())


def test_considered_panel_snapshot(snap_compare):
    """The panel alone at 100 x 30 after a 20-token answer of the tiny model (temperature 0.9,
    top-k 12, top-p 0.8, min-p 0.02, repetition penalty 1.2, seed 5): a bold head line "What the
    model considered · 20 tokens · colour: the model's p", the reply as coloured spans (pale yellow for
    tokens the model was sure of, orange to red for surprising ones, neighbours in alternating
    shades, · for spaces), token 4 in the accent colour (the cursor), the legend "p: ≥0.9
    ≥0.5 ≥0.2 ≥0.05 ≥0.01 <0.01" in the scale's colours, then the table for token 4: its text
    and id, "drawn with p ..", the entropy and ids-left flows over the stages, and up to ten
    candidate rows with columns model / rep pen / temp / top-k / top-p / min-p, the drawn row
    marked ▶ in the accent colour, removed candidates dim with "—"."""
    async def before(pilot):
        await generate(pilot, FILTERED)
        pilot.app.query_one(ProbabilityStrip).cursor = 3
        pilot.app.set_focus(None)
        await pilot.pause(0.2)

    assert snap_compare(Host(tiny_engine()), terminal_size=(100, 30), run_before=before)


def _log_spans(answer, i: int) -> list[tuple[str, str]]:
    """(text, background) of each coloured run the log shows for sample i of an answer."""
    shown = answer.query_one(f"#tok-{i}").content
    return [(shown.plain[s.start:s.end], s.style.bgcolor and s.style.bgcolor.name) for s in shown.spans]


def test_in_probability_mode_the_log_colours_the_answer_by_probability():
    """F7 on probability: the answer in the chat log (every sample) is drawn token by token in the
    colour of the probability the engine's sampler reported for it in the step that drew it (its
    RequestOutputs' choices, stage 0 = the model's softmax), the same scale as the panel's strip;
    the stop token is the strip's marker. Boundaries and off still draw as before, and an answer
    sent in another mode (no choices recorded) stays Markdown."""
    from llm_playground.playground.token_spans import group_spans, visible
    from tiny_engine import answer_text
    engine = tiny_engine(can_end=True)
    reports = record_steps(engine)
    app = make_app(engine)
    tok = engine.tokenizer

    def expected(request_id: int, sample: int) -> list[tuple[str, str]]:
        """The oracle: spans of whole characters from the engine's ids, each coloured by the
        product of its tokens' model probabilities, every other span shaded."""
        choices = engine_choices(reports, request_id, sample)
        ids = [c.token_id for c in choices]
        assert ids == answer_text(reports, request_id, sample)[1]
        out, at = [], 0
        for span in group_spans([t for t in ids if t != IM_END], tok.id_to_bytes):
            p = 1.0
            for c in choices[at:at + len(span.ids)]:
                p *= float(c.probs[0, c.drawn_index])
            at += len(span.ids)
            out.append((visible(span.text), probability_colour(p, shade=len(out) % 2 == 1)[0]))
        if ids and ids[-1] == IM_END:
            p = float(choices[-1].probs[0, choices[-1].drawn_index])
            out.append((STOP_MARK, probability_colour(p, shade=len(out) % 2 == 1)[0]))
        return out

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            chat = app.query_one(ChatView)

            async def send(text: str) -> AssistantMessage:
                turns = len(chat.conversation.turns)
                await pilot.click("#prompt")
                await pilot.press(*text, "enter")
                await wait_for(pilot, lambda: chat.ticket is None and len(chat.conversation.turns) == turns + 2)
                await pilot.pause(0.05)
                return app.query(AssistantMessage).last()

            plain_answer = await send("hi")                       # colours off: no choices
            await pilot.press("f7", "f7", "f7")
            assert chat.colour_mode is ColourMode.PROBABILITY
            assert plain_answer.query_one("#md-0").display and not plain_answer.query_one("#tok-0").display
            app.query_one("#param-n").value = "2"
            answer = await send("the cat")
            for i in range(2):
                assert answer.query_one(f"#tok-{i}").display and not answer.query_one(f"#md-{i}").display
                assert _log_spans(answer, i) == expected(1, i)
            assert any(ids[-1] == IM_END for ids in answer.ids)   # a stop token was drawn
            await pilot.press("f7")                                # off: Markdown again
            await pilot.pause()
            assert answer.query_one("#md-0").display and not answer.query_one("#tok-0").display
            await pilot.press("f7")                                # boundaries: token spans
            await pilot.pause()
            assert answer.query_one("#tok-0").content.plain == answer.token_text(0, tok).plain
            assert _log_spans(answer, 0) != expected(1, 0)
            await pilot.press("f7", "f7")                          # probability again
            await pilot.pause()
            assert _log_spans(answer, 1) == expected(1, 1)

    asyncio.run(run())
