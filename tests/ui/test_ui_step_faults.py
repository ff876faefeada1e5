"""The Chat tab through faults on the device: the real engine on the tiny model, whose forward pass
is made to raise (a GPU out-of-memory, a kernel failure) on chosen calls. What you should see:
the failing answer ends with an error note and a notification, the text it had streamed is kept
as the assistant's turn, earlier turns stay, and the next message is answered as if nothing had
happened, however many answers failed before it (oracle: a fresh engine on the same prompt).
A fault fails only the requests of its step: the load test's later requests still arrive."""
from __future__ import annotations

import asyncio
import threading

import torch
from tiny_engine import tiny_engine
from ui_helpers import make_app, wait_for

from llm_playground.playground.chat_view import AssistantMessage, ChatView


class FlakyForward:
    """Wraps the model's forward: raises `error()` on the calls the test arms (thread-safe, the
    engine worker calls it)."""

    def __init__(self, model) -> None:
        self.real, self.model = model.forward, model
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_from: int | None = None     # first failing call number, None = never
        self.fail_until: int | None = None    # calls before this fail (None = all after fail_from)
        self.error = lambda: RuntimeError("simulated kernel failure")
        model.forward = self

    def arm(self, after: int, count: int | None, error) -> None:
        with self.lock:
            self.fail_from = self.calls + after
            self.fail_until = None if count is None else self.fail_from + count
            self.error = error

    def disarm(self) -> None:
        with self.lock:
            self.fail_from = None

    def __call__(self, *args, **kwargs):
        with self.lock:
            n, self.calls = self.calls, self.calls + 1
            fail = (self.fail_from is not None and n >= self.fail_from
                    and (self.fail_until is None or n < self.fail_until))
        if fail:
            raise self.error()
        return self.real(*args, **kwargs)


def test_faults_fail_one_answer_and_the_chat_goes_on():
    engine = tiny_engine(real_s=0.0005)
    flaky = FlakyForward(engine.runner.model)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            chat = app.query_one(ChatView)

            async def say(text: str) -> AssistantMessage:
                answers = len(app.query(AssistantMessage))
                await pilot.click("#prompt")
                await pilot.press(*text, "enter")
                await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == answers + 1)
                await wait_for(pilot, lambda: chat.ticket is None, timeout=30)
                return app.query(AssistantMessage).last()

            first = await say("hello")
            assert first.status == "done"
            # out of memory in the 6th forward from now: the prefill and 4 decodes gave 5 tokens
            flaky.arm(5, 1, lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
            cut = await say("more")
            assert cut.status == "error" and len(cut.ids[0]) == 5 and cut.texts[0]
            # the engine's typed outcome reaches the user: out of memory, and what to do about it
            assert any("out of memory" in n.message and "retry with fewer requests" in n.message
                       for n in app._notifications)
            turns = [(t.role, t.content) for t in chat.conversation.turns]
            assert turns == [("user", "hello"), ("assistant", first.texts[0]),
                             ("user", "more"), ("assistant", cut.texts[0])]     # the text is kept
            # every forward fails: three answers in a row end in errors, nothing is streamed
            flaky.arm(0, None, lambda: RuntimeError("simulated kernel failure"))
            for word in ("one", "two", "three"):
                failed = await say(word)
                assert failed.status == "error" and failed.texts[0] == ""
                assert [(t.role, t.content) for t in chat.conversation.turns] == turns
            flaky.disarm()
            last = await say("last")
            assert last.status == "done" and last.texts[0]
            assert [(t.role, t.content) for t in chat.conversation.turns][:5] == turns + [("user", "last")]
            assert chat.last_prompt_ids == chat.conversation.__class__(
                chat.conversation.system_prompt, chat.conversation.turns[:5]).prompt_ids(
                engine.tokenizer, app.model_info.chat_template)
            ref = tiny_engine()
            want = ref.generate(chat.last_prompt_ids, chat.sampling_params())
            assert last.ids[0] == tuple(want)
            assert engine.bm.num_owned == 0
            engine.bm.check_invariants()

    asyncio.run(run())


def test_a_fault_during_the_load_test_fails_only_its_step():
    """Six synthetic requests arrive one per step; the third forward from the start fails. The
    requests in that step end with an error, the ones still queued are admitted and run."""
    engine = tiny_engine(num_blocks=256, real_s=0.0005)
    flaky = FlakyForward(engine.runner.model)
    app = make_app(engine)

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.model_info is not None)
            flaky.arm(2, 1, lambda: torch.cuda.OutOfMemoryError("CUDA out of memory"))
            app.engine_worker.load_test(6, prompt_len=16, max_tokens=12)
            worker = app.engine_worker
            await wait_for(pilot, lambda: worker.load_engine is not None, timeout=30)
            load = worker.load_engine                  # the chat's engine or a small pool of its own
            await wait_for(pilot, lambda: flaky.calls >= 3 and not worker.load_running
                           and not load.has_unfinished(), timeout=30)
            assert load._next_request == 6             # all six were added to the engine
            assert load.bm.num_owned == 0
            load.bm.check_invariants()

    asyncio.run(run())
